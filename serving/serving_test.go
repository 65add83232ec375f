package serving_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/serving"
)

// start serves h with limits on loopback (plain HTTP, as the boot
// service does) until the test ends.
func start(t *testing.T, h http.Handler, l serving.Limits) (*serving.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := serving.New("the test server", ln, h, l, nil)
	go s.Serve(s.Listener)
	t.Cleanup(func() { s.Close() })
	return s, ln.Addr().String()
}

// TestPlainServer: a half-sent body is cut off after the read timeout; a
// stream that writes now and then outlives the write timeout; past the
// connection limit a request gets a 503 saying why, and the count drops
// as connections close.
func TestPlainServer(t *testing.T) {
	l := serving.Limits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: time.Second, MaxConnections: 3}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		w = serving.For(w, l.WriteTimeout).Stream(w)
		for i := range 5 {
			fmt.Fprintf(w, "tick %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(700 * time.Millisecond)
		}
	})
	s, addr := start(t, mux, l)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
	begin := time.Now()
	c.SetReadDeadline(begin.Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil || time.Since(begin) > 4*time.Second {
		t.Fatalf("a half-sent body: connection closed after %s (%v), want within 4s", time.Since(begin), err)
	}

	resp, err := http.Get("http://" + addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || strings.Count(string(body), "tick") != 5 {
		t.Fatalf("a 3.5s stream under a 1s write timeout: %q, %v", body, err)
	}

	var held []net.Conn
	for range 3 {
		h, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err = fresh.Post("http://"+addr+"/echo", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(msg), "the test server has 3 connections open, its limit") {
		t.Fatalf("over the limit: %d %q, want 503 saying why", resp.StatusCode, msg)
	}
	for _, h := range held {
		h.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Open() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.Open(); n != 0 {
		t.Fatalf("%d connections counted open after all closed", n)
	}
	resp, err = fresh.Post("http://"+addr+"/echo", "text/plain", strings.NewReader("hi"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the connections closed: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestLimitEvictsIdle: at the connection limit, a new connection takes
// the place of the one idle longest (kept alive after its answer), which
// is closed; connections in use, or opened and not yet asking, are never
// closed for it, and with only those the newcomer gets the 503.
func TestLimitEvictsIdle(t *testing.T) {
	l := serving.Limits{IdleTimeout: time.Minute, MaxConnections: 2}
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) { <-release; io.WriteString(w, "held") })
	s, addr := start(t, mux, l)

	// ask sends one request on a kept-alive connection and reads the
	// answer's status line and headers.
	ask := func(c net.Conn, path string) {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("GET %s: %q %v", path, buf[:n], err)
		}
	}
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ask(first, "/ok")
	time.Sleep(50 * time.Millisecond) // first is idle longest
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	ask(second, "/ok")

	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := fresh.Get("http://" + addr + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("at the limit with two idle connections: %d, want 200", resp.StatusCode)
	}
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := first.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the connection idle longest is still open (read %d bytes)", n)
	}
	ask(second, "/ok") // the other one is still there

	// second busy, and a connection that has asked nothing yet: neither
	// is idle, so the newcomer is refused.
	fmt.Fprintf(second, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	quiet, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.Open() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // second's request is being served
	resp, err = fresh.Get("http://" + addr + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("at the limit with no idle connection: %d, want 503", resp.StatusCode)
	}
	close(release)
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	if n, err := second.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "held") {
		t.Fatalf("the busy connection was cut: %q %v", buf[:n], err)
	}
}
