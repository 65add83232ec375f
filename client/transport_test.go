package client_test

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"hearth.dev/hearth/client"
)

// TestTransportProtocols: the client speaks HTTP/2 to a server that
// offers it (as Hearth's API server does), with requests made at once
// sharing one connection; to a server that offers only HTTP/1.1 (a proxy
// in front of one, say) it falls back to HTTP/1.1 and works the same.
func TestTransportProtocols(t *testing.T) {
	for _, tc := range []struct {
		name  string
		h2    bool
		proto string
	}{{"HTTP/2", true, "HTTP/2.0"}, {"HTTP/1.1 only", false, "HTTP/1.1"}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			protos := map[string]int{}
			conns := 0
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				protos[r.Proto]++
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"metadata":{"resourceVersion":"9"},"items":[{"metadata":{"name":"a"}}]}`))
			}))
			srv.EnableHTTP2 = tc.h2
			srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					mu.Lock()
					conns++
					mu.Unlock()
				}
			}
			srv.StartTLS()
			defer srv.Close()
			ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
			c, err := client.New(&client.Context{Name: "t", Server: srv.URL, CertificateAuthority: string(ca), Token: "t"})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					items, rv, err := c.List(context.Background(), "SSHKey", "lab", client.ListOptions{})
					if err != nil || len(items) != 1 || rv != "9" {
						t.Errorf("List: %d items at %q, %v", len(items), rv, err)
					}
				}()
			}
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if protos[tc.proto] != 10 {
				t.Errorf("requests by protocol: %v, want 10 over %s", protos, tc.proto)
			}
			if tc.h2 && conns != 1 {
				t.Errorf("10 requests at once over HTTP/2 took %d connections, want 1", conns)
			}
		})
	}
}
