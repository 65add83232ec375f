package server_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// What one connected, idle host costs the server: its agent's
// connection and the watches its informers keep open (agent/cache.go),
// with nothing changing. The hosts run in a child process (this test
// binary again, TestHostConnectionsChild), so that this process's
// goroutines, heap and stacks are the server's alone.

// hostAtRest is the server's cost of n idle hosts, per host.
type hostAtRest struct {
	goroutines float64
	heap       float64 // bytes of heap in use
	stacks     float64 // bytes of goroutine stacks
	// byFunction counts the goroutines the hosts added, by the function
	// each is blocked in or was started by (for the log).
	byFunction map[string]int
}

// agentKinds are the kinds an agent's informers watch (agent/cache.go),
// with tenant networking off and on.
var (
	agentKinds           = []string{"VirtualMachine", "Volume", "Snapshot", "Image", "StoragePool"}
	agentNetworkingKinds = []string{"Network", "Subnet", "FloatingIP", "ExternalNetwork", "Host", "SecurityGroup", "SSHKey"}
)

// measureHostsAtRest joins n hosts, has a child process connect each as
// its agent does, waits until every informer has listed and watches, and
// returns what the server holds for them, per host.
func measureHostsAtRest(t testing.TB, n int, networking bool) hostAtRest {
	if os.Getenv("HEARTH_TEST_HOSTS_HEAP") != "" {
		runtime.MemProfileRate = 1
	}
	e := servertest.Start(t)
	dir := t.TempDir()
	var tokens []string
	for i := range n {
		name := fmt.Sprintf("rest-%03d", i)
		jr, err := e.Join(e.JoinToken(api.TokenRequest{TTL: "1h"}).Token, api.JoinRequest{Host: name, Address: "127.0.0.1"})
		if err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		tokens = append(tokens, name+" "+jr.Token)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(strings.Join(tokens, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), e.Server.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	settle := func() (g int, heap, stacks uint64, prof map[string]int) {
		// Let the joins' and lists' requests end, and the collector
		// shrink idle stacks.
		for range 3 {
			time.Sleep(200 * time.Millisecond)
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if d := os.Getenv("HEARTH_TEST_HOSTS_HEAP"); d != "" {
			// The heap profiles before and after, to compare with
			// go tool pprof -base.
			f, err := os.Create(filepath.Join(d, fmt.Sprintf("hosts-%d-%t.heap", runtime.NumGoroutine(), networking)))
			if err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}
		return runtime.NumGoroutine(), ms.HeapInuse, ms.StackInuse, goroutinesByFunction()
	}
	g0, heap0, stacks0, prof0 := settle()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHostConnectionsChild$", "-test.v")
	cmd.Env = append(os.Environ(), "HEARTH_TEST_HOSTS_DIR="+dir, "HEARTH_TEST_HOSTS_SERVER="+e.Server.URL(),
		fmt.Sprintf("HEARTH_TEST_HOSTS_NETWORKING=%t", networking))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	synced := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "SYNCED" {
				synced <- nil
				for sc.Scan() {
				}
				return
			}
		}
		synced <- fmt.Errorf("the hosts' process ended before its informers synced")
	}()
	select {
	case err := <-synced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the hosts' informers did not sync in 2m")
	}
	// The informers have listed; wait until each has its watch open.
	kinds := len(agentKinds)
	if networking {
		kinds += len(agentNetworkingKinds)
	}
	watches := func(prof map[string]int) (c int) {
		for fn, n := range prof {
			if strings.Contains(fn, "server.(*Server).watch") {
				c += n
			}
		}
		return c
	}
	for deadline := time.Now().Add(time.Minute); watches(goroutinesByFunction())-watches(prof0) < n*kinds; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the hosts' %d watches open after a minute", watches(goroutinesByFunction())-watches(prof0), n*kinds)
		}
	}
	g1, heap1, stacks1, prof1 := settle()
	byFn := map[string]int{}
	for fn, c := range prof1 {
		if d := c - prof0[fn]; d != 0 {
			byFn[fn] = d
		}
	}
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	return hostAtRest{goroutines: float64(g1-g0) / float64(n), heap: per(heap0, heap1), stacks: per(stacks0, stacks1), byFunction: byFn}
}

// goroutinesByFunction counts goroutines by the innermost hearth or
// net/http function on their stack: what each is there for.
func goroutinesByFunction() map[string]int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	counts := map[string]int{}
	_, recs, _ := strings.Cut(b.String(), "\n") // after "goroutine profile: total N"
	for _, rec := range strings.Split(recs, "\n\n") {
		lines := strings.Split(rec, "\n")
		if len(lines) == 0 {
			continue
		}
		var c int
		if _, err := fmt.Sscanf(lines[0], "%d @", &c); err != nil {
			continue
		}
		fn := "other"
		for _, l := range lines[1:] {
			fields := strings.Fields(strings.TrimPrefix(l, "#"))
			if len(fields) < 2 {
				continue
			}
			name := fields[1]
			if strings.HasPrefix(name, "hearth.dev/") || strings.HasPrefix(name, "net/http.") {
				fn, _, _ = strings.Cut(name, "+")
				break
			}
		}
		counts[fn] += c
	}
	return counts
}

func (h hostAtRest) log(t testing.TB, what string) {
	t.Logf("%s: per host %.2f goroutines, %.1f KiB heap in use, %.1f KiB stacks", what, h.goroutines, h.heap/1024, h.stacks/1024)
	fns := make([]string, 0, len(h.byFunction))
	for fn := range h.byFunction {
		fns = append(fns, fn)
	}
	slices.SortFunc(fns, func(a, b string) int { return h.byFunction[b] - h.byFunction[a] })
	for _, fn := range fns {
		t.Logf("  %6d goroutines in %s", h.byFunction[fn], fn)
	}
}

// TestHostConnectionCost measures what idle hosts cost the server and
// holds it to a budget: a change that adds a goroutine or a buffer per
// watch or connection fails here.
func TestHostConnectionCost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 50 hosts' connections in a child process")
	}
	for _, tc := range []struct {
		networking bool
		// maxGoroutines is the budget per host.
		maxGoroutines float64
	}{
		{false, 7.5},
		{true, 14.5},
	} {
		t.Run(fmt.Sprintf("networking=%t", tc.networking), func(t *testing.T) {
			got := measureHostsAtRest(t, 50, tc.networking)
			got.log(t, "50 idle hosts")
			if got.goroutines > tc.maxGoroutines {
				t.Errorf("an idle host costs the server %.2f goroutines, want at most %.1f", got.goroutines, tc.maxGoroutines)
			}
		})
	}
}

// BenchmarkHostAtRest reports what an idle host costs the server (its
// agent's connection and watches) once connected: goroutines, heap in
// use and stacks per host, with b.N hosts at once (at least 20; run it
// with -benchtime=200x or so). Its time and -benchmem figures per op are
// of the whole measurement (starting the server, joining the hosts, the
// settling collections), not of a host: read the per-host metrics.
func BenchmarkHostAtRest(b *testing.B) {
	for _, networking := range []bool{false, true} {
		b.Run(fmt.Sprintf("networking=%t", networking), func(b *testing.B) {
			got := measureHostsAtRest(b, max(b.N, 20), networking)
			b.ReportMetric(got.goroutines, "goroutines/host")
			b.ReportMetric(got.heap, "heap-B/host")
			b.ReportMetric(got.stacks, "stack-B/host")
		})
	}
}

// TestHostConnectionsChild is the hosts' process of measureHostsAtRest:
// it connects each host in HEARTH_TEST_HOSTS_DIR/hosts with the
// informers its agent runs, says SYNCED once all have listed, and holds
// them until its stdin closes. It does nothing when run on its own.
func TestHostConnectionsChild(t *testing.T) {
	dir := os.Getenv("HEARTH_TEST_HOSTS_DIR")
	if dir == "" {
		t.Skip("the child process of TestHostConnectionCost")
	}
	data, err := os.ReadFile(filepath.Join(dir, "hosts"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	kinds := agentKinds
	if os.Getenv("HEARTH_TEST_HOSTS_NETWORKING") == "true" {
		kinds = append(slices.Clone(kinds), agentNetworkingKinds...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var all []*client.Informer
	for _, line := range strings.Split(string(data), "\n") {
		name, token, _ := strings.Cut(line, " ")
		c, err := client.New(&client.Context{Name: name, Server: os.Getenv("HEARTH_TEST_HOSTS_SERVER"), CertificateAuthority: string(ca), Token: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kinds {
			o := client.ListOptions{AllTenants: true}
			switch k {
			case "VirtualMachine", "Volume", "Snapshot":
				o.FieldSelector = "spec.host=" + name
			case "StoragePool":
				o = client.ListOptions{}
			}
			inf := client.NewInformer(c, k, "", o)
			go inf.Run(ctx)
			all = append(all, inf)
		}
	}
	for _, inf := range all {
		if err := inf.WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("SYNCED")
	_, _ = bufio.NewReader(os.Stdin).ReadString(0)
}
