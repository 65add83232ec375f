package serving_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"hearth.dev/hearth/serving"
)

//lint:file-ignore SA1019 x/net's HTTP/2 transport, deprecated in favour of net/http's, is the one that dials once for requests that come together (net/http opens a connection per waiting request); see client/transport.go

// startTLS serves h with limits over TLS on loopback, as the API server
// does (ServeTLS offers HTTP/2 and HTTP/1.1), until the test ends, and
// returns a function that makes clients of it: each a transport of its
// own that speaks HTTP/2, x/net's, as hearth's client does (it dials one
// connection for requests that come at once, where net/http's dials one
// per request before it knows the server speaks HTTP/2).
func startTLS(t *testing.T, h http.Handler, l serving.Limits) (*serving.Server, string, func() *http.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := serving.New("the test server", ln, h, l, nil)
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	go s.ServeTLS(s.Listener, "", "")
	t.Cleanup(func() { s.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	newClient := func() *http.Client {
		tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	return s, "https://" + ln.Addr().String(), newClient
}

// ticks is a handler that streams a line every 50 ms until its client
// goes, through serving's stream deadlines, as a watch does.
func ticks(l serving.Limits) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w = serving.For(w, l.WriteTimeout).Stream(w)
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "tick %d %s\n", i, r.Proto); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// readTicks opens a stream and reads n ticks from it, calling first (when
// not nil) once the first has come.
func readTicks(ctx context.Context, hc *http.Client, url string, n int, first func()) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		return fmt.Errorf("answered over %s, want HTTP/2", resp.Proto)
	}
	sc := bufio.NewScanner(resp.Body)
	for i := range n {
		if !sc.Scan() {
			return fmt.Errorf("the stream ended after %d ticks: %v", i, sc.Err())
		}
		if i == 0 && first != nil {
			first()
		}
	}
	return nil
}

// TestHTTP2Streams: over TLS one client's streams and requests share one
// connection; a client that wants more streams than MaxStreams allows
// opens a second connection rather than waiting for a stream to end, and
// every stream keeps flowing; a stream whose reader stops is reset after
// the write timeout while the others on its connection go on.
func TestHTTP2Streams(t *testing.T) {
	l := serving.Limits{WriteTimeout: time.Second, IdleTimeout: time.Minute, MaxStreams: 8}
	mux := http.NewServeMux()
	mux.Handle("GET /ticks", ticks(l))
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	s, base, newClient := startTLS(t, mux, l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	hc := newClient()
	// Six streams held open and twenty requests beside them, two at a
	// time, all on one connection.
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	opened := make(chan struct{}, 6)
	requested := make(chan struct{})
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := readTicks(sctx, hc, base+"/ticks", 5, func() {
				opened <- struct{}{}
				<-requested
			})
			if err != nil {
				errs <- err
			}
		}()
	}
	for range 6 {
		select {
		case <-opened:
		case <-ctx.Done():
			t.Fatal("the six streams did not all open")
		}
	}
	var reqs sync.WaitGroup
	for range 2 {
		reqs.Add(1)
		go func() {
			defer reqs.Done()
			for range 10 {
				resp, err := hc.Get(base + "/ok")
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "HTTP/2.0" {
					errs <- fmt.Errorf("a request answered %q, want HTTP/2.0", b)
				}
			}
		}()
	}
	reqs.Wait()
	close(requested)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := s.Accepted(); n != 1 {
		t.Fatalf("one client's 6 streams and 20 requests took %d connections, want 1", n)
	}

	// Twelve streams at once, over MaxStreams (8): all flow, on two
	// connections.
	errs = make(chan error, 12)
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := readTicks(sctx, hc, base+"/ticks", 10, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := s.Accepted(); n != 2 {
		t.Errorf("12 streams with 8 allowed per connection took %d connections in all, want 2", n)
	}

	// A stream nobody reads: the server's writes to it stall once the
	// client's window for it is full, and after the write timeout it is
	// reset; a stream read on the same connection goes on throughout.
	big := func(w http.ResponseWriter, r *http.Request) {
		w = serving.For(w, l.WriteTimeout).Stream(w)
		chunk := strings.Repeat("x", 64<<10)
		for {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}
	mux.HandleFunc("GET /big", big)
	resp, err := hc.Get(base + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := readTicks(sctx, hc, base+"/ticks", 60, nil); err != nil { // 3 s
		t.Errorf("a stream beside one that is not read: %v", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Errorf("the stream that was not read ended cleanly, want it reset")
	}
	stop()
}

// TestHTTP2Limit: over HTTP/2, a connection over the limit gets its 503
// and is then closed (the client does not keep sending on a connection
// that only refuses), and a connection with no stream open is idle:
// evicted for a newcomer, while one holding a stream (a watch) is not.
func TestHTTP2Limit(t *testing.T) {
	l := serving.Limits{WriteTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxConnections: 1}
	mux := http.NewServeMux()
	mux.Handle("GET /ticks", ticks(l))
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s, base, newClient := startTLS(t, mux, l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(hc *http.Client) int {
		t.Helper()
		resp, err := hc.Get(base + "/ok")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	// a holds a stream open: not idle, so b is refused.
	a, b := newClient(), newClient()
	actx, stopA := context.WithCancel(ctx)
	held := make(chan error, 1)
	go func() { held <- readTicks(actx, a, base+"/ticks", 1_000_000, nil) }()
	for s.Accepted() < 1 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if code := get(b); code != http.StatusServiceUnavailable {
		t.Fatalf("over the limit with the only connection streaming: %d, want 503", code)
	}
	// b's connection goes away after its 503: once a's stream ends, and
	// its connection is idle, b's next request is served on a new
	// connection that evicts a's.
	stopA()
	if err := <-held; err == nil || ctx.Err() != nil {
		t.Fatalf("a's stream: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Open() > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if code := get(b); code != http.StatusOK {
		t.Fatalf("after the refusal, with an idle connection to evict: %d, want 200 (was the refused connection kept?)", code)
	}
	if n := s.Accepted(); n != 3 {
		t.Errorf("%d connections accepted, want 3 (a's, b's refused one, b's next)", n)
	}
	if code := get(b); code != http.StatusOK {
		t.Fatalf("b again: %d", code)
	}
}

// TestHeaderTablesAtConnectionStart: a client (Go's own, with HPACK's
// default 4 KiB table) that sends requests with many distinct headers the
// moment its connection opens, before it has read the server's SETTINGS,
// is served: the server limits only the table it encodes with, never the
// one it decodes with, which a client cannot have heard of yet (a
// server that announced a smaller one ended such connections with
// COMPRESSION_ERROR).
func TestHeaderTablesAtConnectionStart(t *testing.T) {
	_, url, newClient := startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Distinct response headers fill the server's encoder table.
		w.Header().Set("X-Echo", r.Header.Get("X-Pad"))
		fmt.Fprintln(w, "ok")
	}), serving.Limits{})
	for round := range 5 {
		c := newClient()
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/%d/%d", url, round, i), nil)
				// 40 headers of 300 bytes: far more than 1 KiB of
				// table, and each indexed by the client's encoder.
				req.Header.Set("X-Pad", strings.Repeat(fmt.Sprint(i%10), 300))
				req.Header.Set("Authorization", "Bearer "+strings.Repeat("t", 60))
				resp, err := c.Do(req)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				if got := resp.Header.Get("X-Echo"); got != req.Header.Get("X-Pad") {
					errs <- fmt.Errorf("%s: response header X-Echo is %d bytes, want the request's %d", req.URL.Path, len(got), 300)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
	}
}
