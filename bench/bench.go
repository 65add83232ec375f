// Package bench measures Hearth against its peers in the same run, so the
// figures in docs/BENCHMARKS.md compare like with like on one machine.
package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/etcd"
)

// APIConfig says how hard to push.
type APIConfig struct {
	// Clients are the concurrency levels to measure.
	Clients []int
	// Ops per concurrency level and target.
	Ops int
	// NoControllers runs the API without its controllers, to show their
	// share (they watch every kind, so every create fans out to them).
	NoControllers bool
	// Rounds per row; the median round is reported.
	Rounds int
	// WatchOps is how many single writes the watch latency is measured on.
	WatchOps int
	// DataDir for the server (default a temporary directory, removed after).
	DataDir string
}

// Stats are one measurement.
type Stats struct {
	Target  string
	Clients int
	Ops     int
	Errors  int64
	Elapsed time.Duration
	P50     time.Duration
	P99     time.Duration
}

// Rate is operations per second.
func (s Stats) Rate() float64 { return float64(s.Ops) / s.Elapsed.Seconds() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RunAPI starts a server with an embedded etcd, measures creates through
// the API and raw puts to the same etcd over its client socket, then watch
// delivery, and writes a report to w.
func RunAPI(ctx context.Context, cfg APIConfig, w io.Writer) error {
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "hearth-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}
	pp, err := freePort()
	if err != nil {
		return err
	}
	srv, err := server.Start(ctx, server.Config{DataDir: cfg.DataDir, Listen: "127.0.0.1:0", DisableControllers: cfg.NoControllers,
		Etcd: etcd.Config{PeerURL: fmt.Sprintf("https://127.0.0.1:%d", pp)}})
	if err != nil {
		return err
	}
	defer srv.Close()
	hc, err := client.FromConfig(filepath.Join(cfg.DataDir, "admin.conf"), "")
	if err != nil {
		return err
	}
	// The embedded member's only client endpoint is its unix socket.
	ec, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + srv.EtcdSocket()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer ec.Close()

	// A value the size of a stored Subnet, so raw etcd moves the same bytes.
	sample := subnet("bench", "x-0")
	value := strings.Repeat("x", len(mustJSON(sample))+120)
	if cfg.Rounds < 1 {
		cfg.Rounds = 1
	}

	fmt.Fprintf(w, "Hearth API vs raw etcd on the same embedded etcd (data dir %s)\n", cfg.DataDir)
	path := api.CollectionPath(subnetKind, "bench")
	fmt.Fprintf(w, "%d ops per round, median of %d rounds; raw etcd = clientv3 Put of a %d-byte value; API = HTTPS POST of a Subnet\n\n", cfg.Ops, cfg.Rounds, len(value))
	if _, err := hc.Create(ctx, &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: "bench"}}); err != nil && !api.IsAlreadyExists(err) {
		return err
	}
	var rows []Stats
	for _, n := range cfg.Clients {
		// Rounds alternate raw and API so disk and scheduler noise hits
		// both alike; each row is the round with the median rate.
		var raws, apis []Stats
		for round := 0; round < cfg.Rounds; round++ {
			raws = append(raws, measure(ctx, "raw etcd put", n, cfg.Ops, func(ctx context.Context, i int) error {
				_, err := ec.Put(ctx, fmt.Sprintf("/bench/raw/%d/%d/%d", n, round, i), value)
				return err
			}))
			// Like the raw puts, the API row sends a body encoded
			// beforehand and does not decode the answer, so both rows
			// time the server, not the load generator.
			bodies := make([][]byte, cfg.Ops)
			for i := range bodies {
				bodies[i] = mustJSON(subnet("bench", fmt.Sprintf("c%d-%d-%d", n, round, i)))
			}
			apis = append(apis, measure(ctx, "API create", n, cfg.Ops, func(ctx context.Context, i int) error {
				return hc.Do(ctx, http.MethodPost, path, bodies[i], nil)
			}))
		}
		rows = append(rows, median(raws), median(apis))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tclients\tops/s\tp50\tp99\terrors\tAPI/raw\t")
	for i, r := range rows {
		ratio := ""
		if i%2 == 1 {
			ratio = fmt.Sprintf("%.0f%%", 100*r.Rate()/rows[i-1].Rate())
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%d\t%s\t\n", r.Target, r.Clients, r.Rate(), ms(r.P50), ms(r.P99), r.Errors, ratio)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nWatch delivery: %d creates one at a time; latency from sending the write to the watcher receiving it\n\n", cfg.WatchOps)
	rawW, err := watchRaw(ctx, ec, cfg.WatchOps, value)
	if err != nil {
		return err
	}
	apiW, err := watchAPI(ctx, hc, cfg.WatchOps)
	if err != nil {
		return err
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tevents\tp50\tp99\tmax\t")
	for _, r := range []struct {
		name string
		lat  []time.Duration
	}{{"raw etcd watch", rawW}, {"API watch", apiW}} {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", r.name, len(r.lat), ms(pct(r.lat, 50)), ms(pct(r.lat, 99)), ms(pct(r.lat, 100)))
	}
	return tw.Flush()
}

var subnetKind, _ = api.KindByName("Subnet")

func subnet(tenant, name string) *api.Subnet {
	return &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant, Labels: map[string]string{"bench": "api"}},
		Spec:     api.SubnetSpec{Network: "net", CIDR: "10.0.0.0/24"}}
}

// median returns the stats of the round with the median rate.
func median(rounds []Stats) Stats {
	s := append([]Stats(nil), rounds...)
	sort.Slice(s, func(i, j int) bool { return s[i].Rate() < s[j].Rate() })
	return s[len(s)/2]
}

// measure runs ops operations over n concurrent workers.
func measure(ctx context.Context, target string, n, ops int, op func(context.Context, int) error) Stats {
	var next, errs atomic.Int64
	lat := make([]time.Duration, ops)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= ops || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := op(ctx, i); err != nil {
					errs.Add(1)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return Stats{Target: target, Clients: n, Ops: ops, Errors: errs.Load(), Elapsed: time.Since(start), P50: pct(lat, 50), P99: pct(lat, 99)}
}

func watchRaw(ctx context.Context, ec *clientv3.Client, n int, value string) ([]time.Duration, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := ec.Watch(wctx, "/bench/watch/", clientv3.WithPrefix())
	sent := make([]time.Time, n)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		sent[i] = time.Now()
		if _, err := ec.Put(ctx, fmt.Sprintf("/bench/watch/%08d", i), value); err != nil {
			return nil, err
		}
		for got := false; !got; {
			resp := <-wch
			for range resp.Events {
				out = append(out, time.Since(sent[i]))
				got = true
			}
		}
	}
	return out, nil
}

func watchAPI(ctx context.Context, hc *client.Client, n int) ([]time.Duration, error) {
	_, rv, err := hc.List(ctx, "SSHKey", "bench", client.ListOptions{})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, werr, err := hc.WatchOnce(wctx, "Tenant", "", client.ListOptions{ResourceVersion: rv, LabelSelector: "bench=watch"})
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"},
			Metadata: api.ObjectMeta{Name: fmt.Sprintf("w-%d", i), Labels: map[string]string{"bench": "watch"}}}
		sent := time.Now()
		if _, err := hc.Create(ctx, t); err != nil {
			return nil, err
		}
		for got := false; !got; {
			ev, ok := <-events
			if !ok {
				return nil, fmt.Errorf("watch ended: %v", werr())
			}
			if ev.Type == "ADDED" {
				out = append(out, time.Since(sent))
				got = true
			}
		}
	}
	return out, nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[min(i, len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
