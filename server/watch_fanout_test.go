package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

//lint:file-ignore SA1019 x/net's HTTP/2 transport, deprecated in favour of net/http's, is the one that dials once for requests that come together (net/http opens a connection per waiting request); see client/transport.go

// BenchmarkWatchFanout: one change of a Network, watched by N watchers,
// timed from the update's request to the last watcher reading the event.
// "h1" watchers have a connection each, as agents had over HTTP/1.1; "h2"
// ones are streams, five to an HTTP/2 connection, as an agent's five
// watches are now. "raw" watchers see every
// Network as stored (a viewer, no selector: the stored bytes pass
// through); "decoded" ones have a label selector (each change is decoded
// and matched, and shown as the watcher may see it). Every watcher of a
// change writes the one encoding the feed made of it (feedEvent.line);
// before, each encoded it again. The Network carries 8 KiB of
// annotations, about what the status of a network with a hundred ports
// holds, or 1 KiB ("small"), less than a VM: an event over 4 KiB is an
// HTTP/2 frame larger than the connection's write buffer, which Go's
// server writes from a goroutine of its own, one frame at a time per
// connection, where smaller ones go into the buffer together.
func BenchmarkWatchFanout(b *testing.B) {
	for _, mode := range []string{"raw", "decoded"} {
		for _, n := range []int{100, 1000} {
			for _, proto := range []string{"h1", "h2"} {
				b.Run(fmt.Sprintf("%s/watchers=%d/%s", mode, n, proto), func(b *testing.B) { benchWatchFanout(b, mode, n, proto, 8<<10) })
				b.Run(fmt.Sprintf("%s/watchers=%d/%s/small", mode, n, proto), func(b *testing.B) { benchWatchFanout(b, mode, n, proto, 1<<10) })
			}
		}
	}
}

func benchWatchFanout(b *testing.B, mode string, n int, proto string, size int) {
	env := servertest.Start(b, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := context.Background()
	viewer := env.User("viewer", "", api.RoleViewer)
	token := tokenOf(b, viewer)
	net := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
		Metadata: api.ObjectMeta{Name: "fan", Tenant: "lab", Labels: map[string]string{"watched": "yes"}}}
	if _, err := env.Admin.Create(ctx, net); err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Server.CAPEM())
	// HTTP/1.1 and a connection each, as agents had; or HTTP/2 and a
	// connection per five watchers, as an agent's watches are now.
	trs := []interface {
		http.RoundTripper
		CloseIdleConnections()
	}{&http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: n}}
	if proto == "h2" {
		trs = trs[:0]
		for range (n + 4) / 5 {
			trs = append(trs, &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}})
		}
	}
	defer func() {
		for _, tr := range trs {
			tr.CloseIdleConnections()
		}
	}()
	q := url.Values{}
	if mode == "decoded" {
		q.Set("labelSelector", "watched=yes")
	}
	k, _ := api.KindByName("Network")
	u := env.Server.URL() + api.CollectionPath(k, "lab") + "?watch=true&" + q.Encode()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Each watcher counts the change events it reads (bookmarks aside).
	seen := make([]chan struct{}, n)
	var wg sync.WaitGroup
	for i := range n {
		seen[i] = make(chan struct{}, 1024)
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := trs[i/5%len(trs)].RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("watch: %s", resp.Status)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				if !bytes.HasPrefix(sc.Bytes(), []byte(`{"type":"BOOKMARK"`)) {
					seen[i] <- struct{}{}
				}
			}
		}()
	}
	big := strings.Repeat("x", size)
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{"fill": big, "round": fmt.Sprint(i)}}}
		if _, err := env.Admin.Patch(ctx, "Network", "lab", "fan", patch, false); err != nil {
			b.Fatal(err)
		}
		for _, ch := range seen {
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				b.Fatal("a watcher did not see the change within 30s")
			}
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	cancel()
	wg.Wait()
}

// TestWatchSharedEncodingKeepsRedaction: watchers of one change share its
// encoding only where they are shown the object as stored. An admin and
// a viewer watching Machines at once: the admin reads the BMC password
// in the event, the viewer reads it blanked, whichever writes first.
func TestWatchSharedEncodingKeepsRedaction(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	viewer := env.User("auditor", "", api.RoleViewer)
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: "node1"},
		Spec:     api.MachineSpec{MAC: "52:54:00:aa:bb:01", Power: api.MachinePower{Driver: "ipmi", Address: "bmc1", Username: "hearth", Password: "s3cret"}}}
	// Inline credentials are no longer accepted: a machine an older
	// Hearth stored, written to the store directly.
	if _, err := env.Server.Store().Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		_, rv, err := env.Admin.List(ctx, "Machine", "", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		// Both with and without a selector: the stored bytes, and the
		// decoded object.
		sel := ""
		if round == 1 {
			sel = "spec.mac=52:54:00:aa:bb:01"
		}
		admin, _, err := env.Admin.WatchOnce(wctx, "Machine", "", client.ListOptions{ResourceVersion: rv, FieldSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		view, _, err := viewer.WatchOnce(wctx, "Machine", "", client.ListOptions{ResourceVersion: rv, FieldSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.Admin.Patch(ctx, "Machine", "", "node1", map[string]any{"metadata": map[string]any{"labels": map[string]string{"round": fmt.Sprint(round)}}}, false); err != nil {
			t.Fatal(err)
		}
		for who, ch := range map[string]<-chan client.Event{"admin": admin, "viewer": view} {
			select {
			case ev := <-ch:
				got, want := ev.Object.(*api.Machine).Spec.Power.Password, ""
				if who == "admin" {
					want = "s3cret"
				}
				if got != want {
					t.Errorf("round %d: the %s's watch shows password %q, want %q", round, who, got, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: the %s's watch brought nothing", round, who)
			}
		}
		cancel()
	}
}
