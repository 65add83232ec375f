package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/serving"
)

// dialAPI opens a raw TLS connection to the server, as a hand-written
// client would.
func dialAPI(t *testing.T, env *servertest.Env) *tls.Conn {
	t.Helper()
	u, _ := url.Parse(env.Server.URL())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.CAPEM())
	c, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reads c until the server closes it, failing if that takes
// longer than limit; it returns what the server sent.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) string {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit + 10*time.Second))
	got, err := io.ReadAll(c)
	took := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still holds the connection after %s (read so far: %q)", took.Round(time.Millisecond), got)
	}
	if took > limit {
		t.Fatalf("the server closed the connection after %s, want within %s", took.Round(time.Millisecond), limit)
	}
	return string(got)
}

// TestSlowClientsAreCut: on the API, a client that sends half a body and
// stalls is cut off after the read timeout, and one that sends nothing
// after connecting after the header timeout; a watch lives on past every
// timeout and still gets its events; an upload that keeps sending lasts
// longer than the read timeout and succeeds, while one that stalls is
// ended; a download read at a pace lasts longer than the write timeout.
func TestSlowClientsAreCut(t *testing.T) {
	limits := serving.Limits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: time.Second}
	env := servertest.Start(t, servertest.WithoutControllers(), servertest.WithLimits(limits))
	ctx := servertest.Ctx(t)
	token := tokenOf(t, env.Admin)

	t.Run("half a body", func(t *testing.T) {
		c := dialAPI(t, env)
		body := `{"apiVersion":"hearth.dev/v1alpha1","kind":"Network","metadata":{"name":"slow"},"spec":{}}`
		fmt.Fprintf(c, "POST %s/tenants/default/networks HTTP/1.1\r\nHost: hearth\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			api.PathPrefix, token, len(body), body[:len(body)/2])
		closedWithin(t, c, 4*time.Second)
		if _, err := env.Admin.Get(ctx, "Network", "default", "slow"); !api.IsNotFound(err) {
			t.Fatalf("the half-sent network: %v, want not found", err)
		}
	})
	t.Run("half the headers", func(t *testing.T) {
		c := dialAPI(t, env)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: hearth\r\n")
		closedWithin(t, c, 4*time.Second)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dialAPI(t, env)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: hearth\r\n\r\n")
		if got := closedWithin(t, c, 4*time.Second); !strings.Contains(got, "200 OK") {
			t.Fatalf("got %q, want a 200 before the close", got)
		}
	})

	t.Run("long watch", func(t *testing.T) {
		_, rv, err := env.Admin.List(ctx, "Network", "default", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		events, werr, err := env.Admin.WatchOnce(wctx, "Network", "default", client.ListOptions{ResourceVersion: rv})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // three times every timeout
		net := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: api.ObjectMeta{Name: "late", Tenant: "default"}}
		if _, err := env.Admin.Create(ctx, net); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("the watch ended after the timeouts: %v", werr())
				}
				if ev.Type == "ADDED" && ev.Object.GetMetadata().Name == "late" {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the watch brought no event for the network made after the timeouts")
			}
		}
	})

	t.Run("slow upload", func(t *testing.T) {
		data := bytes.Repeat([]byte("hearth!\n"), 96<<10) // 768KiB
		if _, err := env.Admin.Create(ctx, uploadImage("default", "slow", sumOf(data))); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		img, err := env.Admin.UploadImage(ctx, "default", "slow", &trickle{data: data, chunk: 64 << 10, every: 250 * time.Millisecond})
		if err != nil {
			t.Fatalf("an upload that kept sending for %s: %v", time.Since(start).Round(time.Millisecond), err)
		}
		if time.Since(start) < 2*time.Second || img.Status.Phase != api.ImageReady {
			t.Fatalf("upload took %s and left phase %q; want over 2s and Ready", time.Since(start), img.Status.Phase)
		}
	})
	t.Run("stalled upload", func(t *testing.T) {
		if _, err := env.Admin.Create(ctx, uploadImage("default", "stalled", "")); err != nil {
			t.Fatal(err)
		}
		c := dialAPI(t, env)
		fmt.Fprintf(c, "PUT %s/tenants/default/images/stalled/content HTTP/1.1\r\nHost: hearth\r\nAuthorization: Bearer %s\r\nContent-Length: 1048576\r\n\r\n", api.PathPrefix, token)
		c.Write(make([]byte, 512<<10))
		closedWithin(t, c, 4*time.Second)
		o, err := env.Admin.Get(ctx, "Image", "default", "stalled")
		if err != nil {
			t.Fatal(err)
		}
		if o.(*api.Image).Status.Checksum != "" {
			t.Fatalf("a stalled upload was kept: %+v", o.(*api.Image).Status)
		}
	})
	t.Run("slow download", func(t *testing.T) {
		// More than the socket buffers hold, read at a pace: the answer's
		// writes go on past the write timeout, each within it.
		data := bytes.Repeat([]byte("hearth!\n"), 4<<20) // 32MiB
		if _, err := env.Admin.Create(ctx, uploadImage("default", "big", sumOf(data))); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Admin.UploadImage(ctx, "default", "big", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		resp, err := env.Admin.DownloadImage(ctx, "default", "big", 0, "")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		start := time.Now()
		var got bytes.Buffer
		for {
			n, err := io.CopyN(&got, resp.Body, 1<<20)
			if err == io.EOF || n == 0 {
				break
			}
			if err != nil {
				t.Fatalf("a download read at a pace broke off after %d bytes and %s: %v", got.Len(), time.Since(start).Round(time.Millisecond), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("a download read at a pace for %s: %d bytes, want the %d uploaded", time.Since(start).Round(time.Millisecond), got.Len(), len(data))
		}
	})
}

// trickle is a body that sends chunk bytes every so often.
type trickle struct {
	data  []byte
	chunk int
	every time.Duration
	sent  bool
}

func (r *trickle) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.sent {
		time.Sleep(r.every)
	}
	r.sent = true
	n := copy(b[:min(len(b), r.chunk)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestConnectionLimit: past --max-connections a client gets a 503 that
// says why, and once connections close, requests pass again.
func TestConnectionLimit(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers(), servertest.WithLimits(serving.Limits{MaxConnections: 2}))
	ctx := servertest.Ctx(t)
	u, _ := url.Parse(env.Server.URL())
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// A fresh client, so no kept-alive connection slips under the limit.
	fresh := env.ClientWithToken(tokenOf(t, env.Admin), "default")
	_, err := fresh.Get(ctx, "Tenant", "", "default")
	st, ok := err.(*api.Status)
	if !ok || st.Code != http.StatusServiceUnavailable || !strings.Contains(st.Message, "2 connections open, its limit") {
		t.Fatalf("a request over the connection limit: got %v, want 503 naming the limit", err)
	}
	for _, c := range held {
		c.Close()
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		_, err := env.ClientWithToken(tokenOf(t, env.Admin), "default").Get(ctx, "Tenant", "", "default")
		return err
	})
}
