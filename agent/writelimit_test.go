package agent_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute/computetest"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server/servertest"
)

// writeCounter is a TLS proxy in front of the API server, with a
// certificate of the cluster's CA, that slows each write a little and
// counts how many a host has in flight at once: its events, its other
// writes, and its heartbeats apart.
type writeCounter struct {
	mu                  sync.Mutex
	events, writes      int
	mostEvents, mostAll int
	// beats counts the heartbeats, busyBeats those that came while
	// writes were in flight.
	beats, busyBeats int
	total            int
}

func (c *writeCounter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		// The heartbeat: the lease renewal, and the Host's status with it.
		if strings.HasSuffix(r.URL.Path, "/heartbeat") || strings.HasSuffix(r.URL.Path, "/hosts/sim1/status") {
			c.mu.Lock()
			c.beats++
			if c.writes > 0 {
				c.busyBeats++
			}
			c.mu.Unlock()
			next.ServeHTTP(w, r)
			return
		}
		event := strings.Contains(r.URL.Path, "/events")
		c.mu.Lock()
		c.writes++
		c.total++
		if event {
			c.events++
		}
		c.mostAll, c.mostEvents = max(c.mostAll, c.writes), max(c.mostEvents, c.events)
		c.mu.Unlock()
		// Slow enough that writes sent together overlap here.
		time.Sleep(250 * time.Millisecond)
		next.ServeHTTP(w, r)
		c.mu.Lock()
		c.writes--
		if event {
			c.events--
		}
		c.mu.Unlock()
	})
}

// TestAgentWritesInFlight: an agent starting twenty VMs at once has at
// most eight writes in flight at the server (four, and four events), not
// the two dozen its VM workers and event writers would send, and its
// heartbeats go on meanwhile (outside the limit); every VM runs.
func TestAgentWritesInFlight(t *testing.T) {
	env := servertest.Start(t)
	env.Tenant("lab")
	ctx := servertest.Ctx(t)

	ca, err := pki.LoadCAFiles(filepath.Join(env.DataDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServing("proxy", nil, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	backend, err := url.Parse(env.Server.URL())
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(backend); r.Out.Host = r.In.Host },
		Transport: tr, FlushInterval: -1}
	var counts writeCounter
	srv := httptest.NewUnstartedServer(counts.wrap(proxy))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	drv := &computetest.Driver{}
	defer runReadyAgent(t, env, srv.URL, env.JoinToken(api.TokenRequest{TTL: "1h"}).Token, drv)()
	// A lease of 5 s: a heartbeat every 1.25 s once the agent has read
	// it, at its next beat.
	if _, err := env.Admin.Patch(ctx, "Host", "", "sim1", map[string]any{"spec": map[string]any{"leaseSeconds": 5}}, false); err != nil {
		t.Fatal(err)
	}
	beatsNow := func() int {
		counts.mu.Lock()
		defer counts.mu.Unlock()
		return counts.beats
	}
	b0 := beatsNow()
	servertest.Eventually(t, 30*time.Second, func() error {
		if b := beatsNow(); b < b0+3 {
			return fmt.Errorf("%d heartbeats", b-b0)
		}
		return nil
	})
	for _, kind := range []string{"Network", "Subnet"} {
		if _, err := env.Admin.Create(ctx, servertest.Example(kind, "lab")); err != nil {
			t.Fatal(err)
		}
	}
	const n = 20
	t0 := time.Now()
	for i := range n {
		vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("vm-%02d", i), Tenant: "lab"},
			Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20, Host: "sim1", Boot: api.VMBoot{From: api.BootFromNetwork},
				NICs: []api.VMNIC{{Network: "net1"}}, CloudInit: api.CloudInit{Disabled: true}}}
		if _, err := env.Admin.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	servertest.Eventually(t, 60*time.Second, func() error {
		objs, _, err := env.Admin.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
		if err != nil {
			return err
		}
		running := 0
		for _, o := range objs {
			if o.(*api.VirtualMachine).Status.Phase == api.VMRunning {
				running++
			}
		}
		if running != n {
			return fmt.Errorf("%d/%d Running", running, n)
		}
		return nil
	})
	counts.mu.Lock()
	defer counts.mu.Unlock()
	t.Logf("%d writes, %d heartbeats, %v", counts.total, counts.beats, time.Since(t0))
	if w, e := agent.WritesInFlight+agent.EventsInFlight, agent.EventsInFlight; counts.mostAll > w || counts.mostEvents > e {
		t.Errorf("the agent had up to %d writes in flight at once, %d of them events; want at most %d and %d", counts.mostAll, counts.mostEvents, w, e)
	}
	if counts.mostAll < 2 {
		t.Errorf("the agent had at most %d write in flight: the test's writes never overlapped, so it proves nothing", counts.mostAll)
	}
	if counts.busyBeats == 0 {
		t.Errorf("no heartbeat came while the agent's writes were in flight (%d in all)", counts.beats)
	}
}
