package client_test

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/client"
)

// TestLimitWrites: a client limited to two writes has two in flight at
// once however many its goroutines send, the others waiting in order
// in the client, not in the server; its reads and its Unlimited copy's
// writes go at once past writes that hold the limit; a write waiting for
// its turn gives up, unsent, when its context ends.
func TestLimitWrites(t *testing.T) {
	var mu sync.Mutex
	inFlight, most, writes := 0, 0, 0
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"metadata":{"name":"a"}}`))
			return
		}
		mu.Lock()
		writes++
		limited := r.URL.Path == "/write"
		if limited {
			inFlight++
			most = max(most, inFlight)
		}
		mu.Unlock()
		if limited {
			<-release
			mu.Lock()
			inFlight--
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	defer unblock() // before the server closes, should the test fail early
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	base, err := client.New(&client.Context{Name: "t", Server: srv.URL, CertificateAuthority: string(ca), Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	c := base.LimitWrites(2)
	ctx := context.Background()
	sent := func() int {
		mu.Lock()
		defer mu.Unlock()
		return writes
	}

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Do(ctx, http.MethodPost, "/write", map[string]string{"a": "b"}, nil)
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for sent() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a third, were it let through
	if got := sent(); got != 2 {
		t.Fatalf("writes sent while two hold the limit: %d, want 2", got)
	}

	// A read, and the unlimited copy's write, go at once.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if _, err := c.WithWarnings(func(string) {}).Get(rctx, "SSHKey", "lab", "a"); err != nil {
		t.Errorf("a read past the writes' limit: %v", err)
	}
	if err := c.Unlimited().Do(rctx, http.MethodPost, "/urgent", nil, nil); err != nil {
		t.Errorf("an unlimited write past the limit: %v", err)
	}
	cancel()

	// A write whose context ends while it waits is not sent.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = c.Do(wctx, http.MethodPut, "/write", nil, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a write waiting past its context: %v, want %v", err, context.DeadlineExceeded)
	}
	if got := sent(); got != 3 {
		t.Errorf("writes sent: %d, want 3 (two limited, one unlimited)", got)
	}

	unblock()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a limited write: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if writes != 11 || most != 2 {
		t.Errorf("limited writes: %d sent, at most %d at once; want 11 and 2", writes, most)
	}
}
