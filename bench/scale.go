package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/compute/computetest"
)

// ScaleConfig says how big a cluster `hearth bench scale` simulates.
type ScaleConfig struct {
	// Hosts is how many simulated hosts join: the real agent, in this
	// process, with the fake compute driver (compute/computetest).
	Hosts int
	// VMs is the backlog: VMs created while every host is cordoned, then
	// placed at once when the hosts are uncordoned.
	VMs int
	// RunningVMs are created afterwards at Rate per second to measure
	// create→Running (default min(VMs, 2000)).
	RunningVMs int
	Rate       float64
	// Servers is 1, or 3 for an HA control plane (embedded etcd members).
	Servers int
	// KillLeader SIGKILLs the leading server (its etcd member with it)
	// when half the backlog is bound; needs Servers 3.
	KillLeader bool
	// HeartbeatWindow is how long the idle hosts' heartbeats are measured
	// (default 30s: three beats of the default 40s lease).
	HeartbeatWindow time.Duration
	// BootDelay is how long a simulated guest takes to write its first
	// console output (0: at once).
	BootDelay time.Duration
	// VMsPerNetwork is how many of the bench's VMs share a network (and
	// its one subnet): the VMs go round-robin over as many networks as
	// that takes (default 250). A network's status lists every NIC on it
	// and a subnet's addresses are allocated from its held ones, so one
	// network of ten thousand VMs would measure that network, not the
	// control plane.
	VMsPerNetwork int
	// Binary is the hearth binary the servers run (default this one).
	Binary string
	// Dir is the work directory (default a temporary one, removed after).
	Dir string
	// ServerCPUProfile, when set, is where each server writes CPU
	// profiles of its run (NAME.pprof in this directory up to the
	// placement, NAME.pprof.1 of the placement until the backlog runs,
	// NAME.pprof.2 after) and one of its heap when it stops
	// (NAME.heap.pprof).
	ServerCPUProfile string
	// ServerMemProfile, when set, is where each server writes its heap
	// (NAME.heap.pprof, and the runtime's figures in
	// NAME.heap.pprof.memstats) at the end of the measurements, every
	// agent still connected.
	ServerMemProfile string
	// ServerPlacingProfile, with ServerMemProfile, has each server also
	// write its heap and its goroutines (NAME.heap.pprof.peak and
	// NAME.heap.pprof.peak.goroutines) during the placement, at the
	// most goroutines seen: what it holds at its peak. Each costs the
	// server a collection then, so the peaks measured are a little lower.
	ServerPlacingProfile bool
	// ServerMemoryLimit, when set, is each server's GOMEMLIMIT (the Go
	// runtime's soft memory limit: "900MiB").
	ServerMemoryLimit string
	// HostsDir is where the simulated hosts keep their files, each in
	// its own directory (default a new directory in /dev/shm, a tmpfs,
	// removed after; DIR/hosts where there is none).
	HostsDir string
	// NextPhase, if set, is called where the servers' CPU profiles begin
	// their next phase (as the placement begins, and as the backlog
	// runs), whether or not they are profiled: hearth bench scale
	// --cpuprofile profiles the simulated hosts by the same phases.
	NextPhase func()
	Timeout   time.Duration
	// Logf, if set, hears progress as it happens.
	Logf func(format string, args ...any)
}

// ScaleResult is what a run measured, and what it found wrong.
type ScaleResult struct {
	Hosts, VMs int
	// Joined is the time from starting the agents to every Host Ready.
	Joined time.Duration
	// Heartbeats: with every host idle, etcd revisions per second, server
	// CPU (cores) and etcd database growth per minute.
	HeartbeatWrites, HeartbeatCPU float64
	HeartbeatDBGrowth             int64
	// Created is the backlog's creation time; Placed from uncordoning the
	// hosts until the last backlog VM was bound; PlacementRate VMs/s.
	Created, Placed time.Duration
	PlacementRate   float64
	// BacklogRunning is from uncordoning until every backlog VM ran.
	BacklogRunning time.Duration
	// BacklogCPUPerVM and BacklogWritesPerVM are what the servers spent
	// per backlog VM over that time (CPU, etcd revisions): placing it,
	// and serving its agent's writes as it started.
	BacklogCPUPerVM    time.Duration
	BacklogWritesPerVM float64
	// BacklogHostsCPUPerVM is what the simulated hosts (this process)
	// spent per backlog VM over that time.
	BacklogHostsCPUPerVM time.Duration
	// PlacementWaits are what the servers' own metrics saw while placing
	// (one server, no leader killed): etcd's WAL fsyncs and backend
	// commits, and the API's PUTs and POSTs (status writes, events,
	// bindings), each as "name: count, mean, p99".
	PlacementWaits []string
	// PlacementWrites is etcd revisions per second while placing.
	PlacementWrites, PlacementCPU float64
	// CreateToRunning p50, p95, max at Rate.
	RunP50, RunP95, RunMax time.Duration
	// RunSlowest describes the slowest of them: what each waited for
	// (slowest.go).
	RunSlowest []string
	// RunSteps is their create→Running by step (slowest.go).
	RunSteps string
	// Fanout is from sending a create that names a host to that host's
	// agent looking the VM up, one VM per host.
	FanP50, FanP99, FanMax time.Duration
	// FanCreate is the create's own part of it (sent → answered), and
	// FanDeliver the rest (answered → the agent's lookup): the watch's
	// delivery and the agent's reaction.
	FanCreateP50, FanCreateP99, FanDeliverP50, FanDeliverP99 time.Duration
	// FanCreatePhases is the creates' time in the server, by phase
	// (hearth_api_vm_create_phase_seconds), over the fan-out's creates.
	FanCreatePhases string
	// FanServerP50 and FanServerP99 are the server's own part, from its
	// hearth_watch_delivery_seconds of agents' watches over the phase:
	// from the server reading the change from etcd to the agent's
	// connection flushed with it, as the upper bound of its histogram
	// bucket (-1: past the last); FanServerEvents counts them.
	FanServerP50, FanServerP99 time.Duration
	FanServerEvents            float64
	// ListAll is the median time to list every VM, of ListCount.
	ListAll time.Duration
	// ListBytes is the same list read but not decoded: the server's
	// part.
	ListBytes time.Duration
	ListCount int
	// Server memory at the end (the sum over live servers) and its peak.
	ServerRSS, ServerPeakRSS int64
	// ServerRSSAnon is the servers' own memory; ServerRSSFile files
	// mapped and touched: etcd's database, the binary.
	ServerRSSAnon, ServerRSSFile int64
	DBSize, DBInUse              int64
	// LeaderKilled names the server killed; Gap is from the kill to the
	// next binding.
	LeaderKilled string
	Gap          time.Duration
	// NewLeader is the server that led next, NewLeaderAfter how long
	// after the kill (failover.go); RunWaited how long create→Running
	// waited for it to begin.
	NewLeader      string
	NewLeaderAfter time.Duration
	RunWaited      time.Duration
	// BoundTwice are VMs seen on two hosts or started by two agents;
	// Lost are VMs that never ran.
	BoundTwice, Lost []string
	// Flapped are the hosts declared NotReady after all were Ready (a
	// lease renewal that came too late), or not Ready at the end.
	Flapped []string
	// Retries counts the bench's requests tried again after a 503 or a
	// timeout: a sign the control plane was overloaded.
	Retries int64
	// LoadStart and LoadEnd are the machine's load average (1 minute)
	// when the run began and ended: others' work shares the CPUs.
	LoadStart, LoadEnd string
	// HostsCPU is the CPU time of this process (the simulated hosts and
	// the bench) over the run.
	HostsCPU time.Duration
	// Conns are the API servers' client connections open at the end
	// (the agents' watches over, none busy), and ConnsPeak the most
	// seen at the samples taken during the run.
	Conns, ConnsPeak int
	// Memory is the servers' peak memory in each phase of the run,
	// sampled twice a second (see memSampler).
	Memory []MemPhase
}

const scaleTenant = "bench"

// RunScale runs servers as child processes and cfg.Hosts simulated hosts
// in this process, then measures placement, create→Running, watch
// delivery, listing and the cost of heartbeats, and writes a report to w.
func RunScale(ctx context.Context, cfg ScaleConfig, w io.Writer) (*ScaleResult, error) {
	if cfg.Hosts < 1 || cfg.VMs < 0 {
		return nil, fmt.Errorf("--hosts must be at least 1 and --vms at least 0")
	}
	if cfg.Servers == 0 {
		cfg.Servers = 1
	}
	if cfg.Servers != 1 && cfg.Servers != 3 {
		return nil, fmt.Errorf("--servers %d: run 1, or 3 (an HA control plane)", cfg.Servers)
	}
	if cfg.KillLeader && cfg.Servers != 3 {
		return nil, fmt.Errorf("--kill-leader needs --servers 3: a lone server's death stops the cluster")
	}
	if cfg.RunningVMs == 0 {
		cfg.RunningVMs = min(cfg.VMs, 2000)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 200
	}
	if cfg.VMsPerNetwork <= 0 {
		cfg.VMsPerNetwork = 250
	}
	if cfg.VMsPerNetwork > 1<<16-3 {
		return nil, fmt.Errorf("--vms-per-network %d: at most 65533 (each network has one subnet, at most a /16)", cfg.VMsPerNetwork)
	}
	if cfg.HeartbeatWindow == 0 {
		cfg.HeartbeatWindow = 30 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Binary = exe
	}
	if cfg.Dir == "" {
		dir, err := scratchDir(os.TempDir(), "hearth-scale-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	if cfg.HostsDir == "" {
		cfg.HostsDir = filepath.Join(cfg.Dir, "hosts")
		// Each simulated host stands for a machine with its own disk:
		// a thousand of them creating, syncing and renaming their VMs'
		// files on the disk etcd syncs its log to would measure that
		// disk's journal, not the control plane, nor the agents.
		if dir, err := scratchDir("/dev/shm", "hearth-scale-hosts-"); err == nil {
			defer os.RemoveAll(dir) // after the agents stopped (r.close)
			cfg.HostsDir = dir
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := &scaleRun{cfg: cfg, res: &ScaleResult{Hosts: cfg.Hosts, VMs: cfg.VMs}, vms: map[string]*vmTrack{}, counts: map[string]int64{},
		starts: map[string][]string{}, lookups: map[string]time.Time{}, lookupCount: map[string]int{}}
	defer r.close()
	r.res.LoadStart = loadAverage()
	if err := r.run(ctx); err != nil {
		return r.res, err
	}
	r.report(w)
	return r.res, nil
}

// scaleRun is one run's state.
type scaleRun struct {
	cfg     ScaleConfig
	res     *ScaleResult
	servers []*serverProc
	// admin talks to a server that stays up; ec to its etcd member.
	admin  *client.Client
	adminP *serverProc
	ec     *clientv3.Client
	// mem samples the servers' memory by phase.
	mem *memSampler

	agentsCancel context.CancelFunc
	agentsDone   sync.WaitGroup
	logFile      *os.File
	oldLog       *slog.Logger
	hostNames    []string

	mu sync.Mutex
	// vms are every bench VM as the bench's informer saw it, by name.
	vms map[string]*vmTrack
	// starts are the hosts whose driver started each VM id; lookups the
	// first time an agent looked each VM id up.
	starts  map[string][]string
	lookups map[string]time.Time
	// lookupCount is how many times agents looked each VM id up: a
	// reconcile each (slowest.go).
	lookupCount map[string]int
	// lastBound is the latest binding seen.
	lastBound time.Time
	// networks are the bench's networks; nextNIC picks the next VM's.
	networks []string
	nextNIC  atomic.Int64
	// retries counts requests tried again after a 503 or a timeout.
	retries atomic.Int64
	// counts are how many VMs of each name prefix ("bl", "run", "fan")
	// reached each state ("unschedulable", "bound", "running").
	counts map[string]int64

	// readyAt is when every simulated host was first seen Ready.
	readyAt time.Time
	// failover follows the election once the leader was killed
	// (failover.go); nil before, and without --kill-leader.
	failover *failover
}

// vmTrack is what the bench saw of one VM.
type vmTrack struct {
	uid          string
	sent         time.Time
	created      time.Time // the create's answer
	hosts        []string
	bound        time.Time // the Scheduled condition's time
	running      time.Time // status.firstOutputAt
	unschedBound bool      // seen Scheduled=False
	started      time.Time // status.startedAt
	states       []vmState // each state the informer saw, when (slowest.go)
	retries      int       // the create's retries
}

func (r *scaleRun) logf(format string, args ...any) { r.cfg.Logf(format, args...) }

func (r *scaleRun) run(ctx context.Context) error {
	cfg := r.cfg
	r.logf("starting %d server(s) from %s in %s", cfg.Servers, cfg.Binary, cfg.Dir)
	var err error
	// An agent holds one HTTP/2 connection for its watches and
	// requests (it held about eight before: 8,341 for 1,000 agents in
	// one run); room for twice that, and the bench's own.
	r.servers, err = startServers(ctx, cfg.Binary, cfg.Dir, cfg.Servers, 2*cfg.Hosts+1024, cfg.ServerCPUProfile, cfg.ServerMemProfile, cfg.ServerMemoryLimit)
	if err != nil {
		return err
	}
	r.mem = newMemSampler(r, 500*time.Millisecond)
	r.mem.setPhase("start, networks")
	mctx, mcancel := context.WithCancel(ctx)
	defer func() {
		mcancel()
		r.res.Memory = r.mem.result()
	}()
	go r.mem.run(mctx)
	// The bench and the agents talk to servers that will survive: the
	// client has one server URL (an HA deployment puts a load balancer
	// in front), so agents of a killed server would lose their API.
	leader, err := r.leader(ctx, r.servers[0])
	if err != nil {
		return err
	}
	survivors := r.servers
	if cfg.KillLeader {
		survivors = nil
		for _, p := range r.servers {
			if p != leader {
				survivors = append(survivors, p)
			}
		}
	}
	r.adminP = survivors[0]
	if r.admin, err = r.adminP.client(); err != nil {
		return err
	}
	if r.ec, err = r.adminP.etcd(); err != nil {
		return err
	}
	t := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: scaleTenant}}
	if _, err := r.admin.Create(ctx, t); err != nil && !api.IsAlreadyExists(err) {
		return err
	}
	// The VMs boot from their network: nothing for a simulated host to
	// fetch (a kernel would come from an Image every host reports on, or
	// a URL off this machine).
	if err := r.makeNetworks(ctx); err != nil {
		return err
	}

	inf := client.NewInformer(r.admin, "VirtualMachine", scaleTenant, client.ListOptions{})
	inf.OnChange(r.vmSeen)
	go inf.Run(ctx)
	if err := inf.WaitSynced(ctx); err != nil {
		return err
	}

	r.mem.setPhase("hosts joining")
	if err := r.startAgents(ctx, survivors); err != nil {
		return err
	}
	r.mem.setPhase("idle hosts")
	if err := r.measureHeartbeats(ctx); err != nil {
		return err
	}
	r.mem.setPhase("backlog created")
	if err := r.backlog(ctx, leader); err != nil {
		return err
	}
	r.mem.setPhase("create→Running")
	if err := r.createToRunning(ctx); err != nil {
		return err
	}
	r.mem.setPhase("watch fan-out")
	if err := r.fanout(ctx); err != nil {
		return err
	}
	r.mem.setPhase("list every VM")
	if err := r.listAll(ctx); err != nil {
		return err
	}
	r.mem.setPhase("end")
	r.final(ctx)
	return nil
}

// leader reads which server leads (runs the controllers) from the
// election key.
func (r *scaleRun) leader(ctx context.Context, via *serverProc) (*serverProc, error) {
	ec, err := via.etcd()
	if err != nil {
		return nil, err
	}
	defer ec.Close()
	for ctx.Err() == nil {
		resp, err := ec.Get(ctx, "/hearth/leader", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
		if err == nil && len(resp.Kvs) == 1 {
			for _, p := range r.servers {
				if p.url == string(resp.Kvs[0].Value) {
					return p, nil
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, ctx.Err()
}

// vmSeen records the moments of a bench VM.
func (r *scaleRun) vmSeen(key string, obj api.Object) {
	if obj == nil {
		return
	}
	vm := obj.(*api.VirtualMachine)
	r.mu.Lock()
	defer r.mu.Unlock()
	tr := r.vms[vm.Metadata.Name]
	if tr == nil {
		tr = &vmTrack{}
		r.vms[vm.Metadata.Name] = tr
	}
	tr.uid = vm.Metadata.UID
	if h := vm.Spec.Host; h != "" && !contains(tr.hosts, h) {
		tr.hosts = append(tr.hosts, h)
	}
	prefix, _, _ := strings.Cut(vm.Metadata.Name, "-")
	if c := vm.Status.Condition(api.ConditionScheduled); c != nil {
		if c.Status == api.ConditionFalse && !tr.unschedBound {
			tr.unschedBound = true
			r.counts[prefix+"/unschedulable"]++
		}
		if c.Status == api.ConditionTrue && tr.bound.IsZero() && c.LastTransitionTime != nil {
			tr.bound = *c.LastTransitionTime
			r.counts[prefix+"/bound"]++
			if tr.bound.After(r.lastBound) {
				r.lastBound = tr.bound
			}
		}
	}
	reason := ""
	if c := vm.Status.Condition(api.ConditionReady); c != nil {
		reason = c.Reason
	}
	tr.seenState(stateOf(vm.Status.Phase, reason), time.Now())
	if vm.Status.StartedAt != nil {
		tr.started = *vm.Status.StartedAt
	}
	if vm.Status.FirstOutputAt != nil && tr.running.IsZero() && vm.Status.Phase == api.VMRunning {
		tr.running = *vm.Status.FirstOutputAt
		r.counts[prefix+"/running"]++
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// startAgents starts the simulated hosts with a reusable join token and
// waits until every Host is Ready.
func (r *scaleRun) startAgents(ctx context.Context, servers []*serverProc) error {
	jt, err := r.admin.CreateToken(ctx, client.JoinTokens(), api.TokenRequest{Description: "hearth bench scale", TTL: "24h", Reusable: true})
	if err != nil {
		return fmt.Errorf("making a reusable join token: %w", err)
	}
	// The agents' logs (a thousand "agent starting") go to a file; only
	// warnings are kept.
	if r.logFile, err = os.Create(filepath.Join(r.cfg.Dir, "agents.log")); err != nil {
		return err
	}
	r.oldLog = slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(r.logFile, &slog.HandlerOptions{Level: slog.LevelWarn})))

	actx, cancel := context.WithCancel(context.Background())
	r.agentsCancel = cancel
	start := time.Now()
	r.logf("starting %d simulated hosts in %s", r.cfg.Hosts, r.cfg.HostsDir)
	for i := range r.cfg.Hosts {
		name := fmt.Sprintf("sim-%05d", i)
		r.hostNames = append(r.hostNames, name)
		drv := &computetest.Driver{NoHistory: true, OnCall: r.driverCall(name),
			Behave: func(compute.Spec) computetest.Behavior { return computetest.Behavior{BootDelay: r.cfg.BootDelay} }}
		acfg := agent.Config{
			Server:    servers[i%len(servers)].url,
			JoinToken: jt.Token,
			CAFile:    filepath.Join(servers[0].dir, "ca.crt"),
			Name:      name,
			DataDir:   filepath.Join(r.cfg.HostsDir, name),
			Listen:    "127.0.0.1:0",
			Driver:    drv,
			// One machine under every simulated host: checking it
			// a thousand times tells nothing new.
			NoHostChecks: true,
		}
		r.agentsDone.Add(1)
		go func() {
			defer r.agentsDone.Done()
			if err := agent.Run(actx, acfg); err != nil && actx.Err() == nil {
				slog.Error("simulated host stopped", "host", name, "err", err)
			}
		}()
	}
	err = r.waitHosts(ctx, func(h *api.Host) bool { return h.Status.Phase == api.HostReady }, "Ready")
	if err != nil {
		return err
	}
	r.res.Joined = time.Since(start)
	r.readyAt = time.Now()
	r.logf("%d hosts Ready in %s", r.cfg.Hosts, r.res.Joined.Round(time.Millisecond))
	// What an administrator of such hosts sets: room for many small VMs
	// (each reports this machine's CPUs), and cordoned for the backlog.
	return r.patchHosts(ctx, map[string]any{"spec": map[string]any{"cpuOvercommit": 64, "unschedulable": true}})
}

func (r *scaleRun) driverCall(host string) func(computetest.Call) {
	return func(c computetest.Call) {
		switch {
		case c.Op == computetest.OpLookup:
			r.mu.Lock()
			if _, ok := r.lookups[c.ID]; !ok {
				r.lookups[c.ID] = c.At
			}
			r.lookupCount[c.ID]++
			r.mu.Unlock()
		case c.Op == computetest.OpStart && c.Err == nil:
			r.mu.Lock()
			if !contains(r.starts[c.ID], host) {
				r.starts[c.ID] = append(r.starts[c.ID], host)
			}
			r.mu.Unlock()
		}
	}
}

// waitHosts waits until every simulated Host satisfies ok.
func (r *scaleRun) waitHosts(ctx context.Context, ok func(*api.Host) bool, what string) error {
	last, lastLog := -1, time.Time{}
	for {
		hosts, _, err := r.admin.List(ctx, "Host", "", client.ListOptions{})
		if err == nil {
			n := 0
			for _, o := range hosts {
				if ok(o.(*api.Host)) {
					n++
				}
			}
			if n >= r.cfg.Hosts {
				return nil
			}
			if n != last && time.Since(lastLog) > 5*time.Second {
				r.logf("%d/%d hosts %s", n, r.cfg.Hosts, what)
				last, lastLog = n, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d hosts to be %s: %w", r.cfg.Hosts, what, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// patchHosts applies one merge patch to every simulated Host, 32 at once.
func (r *scaleRun) patchHosts(ctx context.Context, patch map[string]any) error {
	return parallel(ctx, len(r.hostNames), 32, func(i int) error {
		return r.retry(ctx, func() error {
			_, err := r.admin.Patch(ctx, "Host", "", r.hostNames[i], patch, false)
			return err
		})
	})
}

// parallel runs fn(0..n-1) over workers goroutines and returns the first
// error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// sample is a moment's server CPU (summed over live servers), etcd
// revision and database size.
type sample struct {
	at time.Time
	// serverCPU is each live server's CPU so far, by name: a figure
	// between two samples counts only the servers alive at both (a
	// killed leader's CPU would otherwise leave the sum).
	serverCPU   map[string]time.Duration
	hostsCPU    time.Duration // this process's: the simulated hosts
	rev         int64
	db, dbInUse int64
}

// serverCPUSince is the CPU the servers alive at both samples used
// between them.
func serverCPUSince(a, b sample) time.Duration {
	var d time.Duration
	for name, cpu := range b.serverCPU {
		if before, ok := a.serverCPU[name]; ok {
			d += cpu - before
		}
	}
	return d
}

func (r *scaleRun) sample(ctx context.Context) sample {
	s := sample{at: time.Now(), serverCPU: map[string]time.Duration{}}
	if st, err := readProc(os.Getpid()); err == nil {
		s.hostsCPU = st.cpu
	}
	for _, p := range r.servers {
		if p.alive() {
			if st, err := readProc(p.cmd.Process.Pid); err == nil {
				s.serverCPU[p.name] = st.cpu
			}
		}
	}
	if resp, err := r.ec.Get(ctx, "/hearth/bench-probe"); err == nil {
		s.rev = resp.Header.Revision
	}
	if st, err := r.ec.Status(ctx, r.ec.Endpoints()[0]); err == nil {
		s.db, s.dbInUse = st.DbSize, st.DbSizeInUse
	}
	r.res.ConnsPeak = max(r.res.ConnsPeak, r.apiConns())
	return s
}

// apiConns counts the TCP connections established to the live servers'
// API ports, from the kernel's table (all of them are on this machine).
func (r *scaleRun) apiConns() int {
	ports := map[string]bool{}
	for _, p := range r.servers {
		if u, err := url.Parse(p.url); err == nil && p.alive() {
			if port, err := strconv.Atoi(u.Port()); err == nil {
				ports[fmt.Sprintf("%04X", port)] = true
			}
		}
	}
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			// sl local_address rem_address st …; 01 is ESTABLISHED.
			fs := strings.Fields(line)
			if len(fs) < 4 || fs[3] != "01" {
				continue
			}
			if _, port, ok := strings.Cut(fs[1], ":"); ok && ports[port] {
				n++
			}
		}
	}
	return n
}

// rates are what happened between two samples: etcd revisions (writes)
// per second and server CPU in cores.
func rates(a, b sample) (writes, cores float64) {
	d := b.at.Sub(a.at).Seconds()
	return float64(b.rev-a.rev) / d, serverCPUSince(a, b).Seconds() / d
}

// measureHeartbeats watches idle hosts: every write then is a heartbeat
// (or what follows one).
func (r *scaleRun) measureHeartbeats(ctx context.Context) error {
	// Let the joins' and patches' aftermath settle first.
	time.Sleep(3 * time.Second)
	a := r.sample(ctx)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(r.cfg.HeartbeatWindow):
	}
	b := r.sample(ctx)
	r.res.HeartbeatWrites, r.res.HeartbeatCPU = rates(a, b)
	r.res.HeartbeatDBGrowth = int64(float64(b.db-a.db) / b.at.Sub(a.at).Minutes())
	r.logf("idle: %.1f etcd writes/s, server CPU %.2f cores", r.res.HeartbeatWrites, r.res.HeartbeatCPU)
	return nil
}

// makeNetworks makes the bench tenant's networks, each with one subnet
// (a /23, or as large as VMsPerNetwork needs), enough for every VM the
// run makes at VMsPerNetwork each. The addresses are the simulated
// tenant's own: nothing is sent to them.
func (r *scaleRun) makeNetworks(ctx context.Context) error {
	total := r.cfg.VMs + r.cfg.RunningVMs + r.cfg.Hosts
	n := max(1, (total+r.cfg.VMsPerNetwork-1)/r.cfg.VMsPerNetwork)
	bits := 23
	for 1<<(32-bits)-3 < r.cfg.VMsPerNetwork { // less network, broadcast and gateway
		bits--
	}
	size := 1 << (32 - bits)
	if n*size > 1<<24 {
		return fmt.Errorf("%d networks of /%d do not fit in 10.0.0.0/8: raise --vms-per-network", n, bits)
	}
	r.logf("making %d networks of up to %d VMs", n, r.cfg.VMsPerNetwork)
	r.networks = make([]string, n)
	return parallel(ctx, n, 16, func(i int) error {
		name := fmt.Sprintf("net-%05d", i)
		r.networks[i] = name
		base := i * size
		cidr := fmt.Sprintf("10.%d.%d.%d/%d", base>>16&255, base>>8&255, base&255, bits)
		objs := []api.Object{
			&api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: api.ObjectMeta{Name: name, Tenant: scaleTenant}},
			&api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"}, Metadata: api.ObjectMeta{Name: name + "-a", Tenant: scaleTenant},
				Spec: api.SubnetSpec{Network: name, CIDR: cidr}},
		}
		for _, o := range objs {
			if err := r.retry(ctx, func() error {
				_, err := r.admin.Create(ctx, o)
				if api.IsAlreadyExists(err) {
					return nil
				}
				return err
			}); err != nil {
				return fmt.Errorf("making %s %s: %w", o.GetTypeMeta().Kind, o.GetMetadata().Name, err)
			}
		}
		return nil
	})
}

func (r *scaleRun) newVM(name, host string) *api.VirtualMachine {
	net := r.networks[int(r.nextNIC.Add(1)-1)%len(r.networks)]
	return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: scaleTenant},
		Spec: api.VirtualMachineSpec{CPUs: 1, Memory: 64 << 20, Host: host,
			Boot:      api.VMBoot{From: api.BootFromNetwork},
			NICs:      []api.VMNIC{{Network: net}},
			CloudInit: api.CloudInit{Disabled: true}}}
}

func (r *scaleRun) create(ctx context.Context, vm *api.VirtualMachine) error {
	r.mu.Lock()
	tr := r.vms[vm.Metadata.Name]
	if tr == nil {
		tr = &vmTrack{}
		r.vms[vm.Metadata.Name] = tr
	}
	tr.sent = time.Now()
	r.mu.Unlock()
	var out api.Object
	tries := 0
	err := r.retry(ctx, func() error {
		var err error
		tries++
		out, err = r.admin.Create(ctx, vm)
		if api.IsAlreadyExists(err) && r.retries.Load() > 0 {
			// An earlier try that timed out was written after all.
			out, err = r.admin.Get(ctx, "VirtualMachine", scaleTenant, vm.Metadata.Name)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("creating VM %s: %w", vm.Metadata.Name, err)
	}
	r.mu.Lock()
	tr.uid = out.GetMetadata().UID
	tr.created = time.Now()
	tr.retries = tries - 1
	r.mu.Unlock()
	return nil
}

// retry calls fn again, after a pause, while it fails as an overloaded
// server does (503, a timeout), at most ten times; it counts the retries
// for the report.
func (r *scaleRun) retry(ctx context.Context, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || attempt == 10 || ctx.Err() != nil || !transient(err) {
			return err
		}
		if n := r.retries.Add(1); n <= 3 {
			// What overloads shows: a few of them are enough.
			r.logf("retrying a request (%d so far): %v", n, err)
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}

// transient reports whether err is worth trying again: the server said it
// is unavailable, or the request did not get an answer.
func transient(err error) bool {
	switch api.ReasonOf(err) {
	case api.ReasonUnavailable:
		return true
	case "":
		return true // no answer: a connection or a timeout error
	}
	return false
}

// waitCount waits until get() reaches n, saying how it goes.
func (r *scaleRun) waitCount(ctx context.Context, what string, n int64, get func() int64, during func(int64)) error {
	last := int64(-1)
	lastLog := time.Now()
	for {
		got := get()
		if during != nil {
			during(got)
		}
		if got >= n {
			return nil
		}
		if got != last && time.Since(lastLog) > 5*time.Second {
			r.logf("%d/%d %s", got, n, what)
			last, lastLog = got, time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d VMs %s (%d so far): %w", n, what, got, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nextProfiles starts the servers' next CPU profiles (with
// --server-cpuprofile): NAME.pprof.1 holds placement alone, from
// uncordoning the hosts to the backlog Running, NAME.pprof what came
// before and NAME.pprof.2 what came after.
func (r *scaleRun) nextProfiles() {
	if r.cfg.NextPhase != nil {
		r.cfg.NextPhase()
	}
	if r.cfg.ServerCPUProfile == "" {
		return
	}
	for _, s := range r.servers {
		s.nextProfile()
	}
}

// count returns how many VMs named prefix-… reached state.
func (r *scaleRun) count(prefix, state string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[prefix+"/"+state]
}

// backlog creates cfg.VMs while the hosts are cordoned, waits until the
// scheduler has said why each cannot be placed, uncordons the hosts and
// times placing them all.
func (r *scaleRun) backlog(ctx context.Context, leader *serverProc) error {
	n := r.cfg.VMs
	if n == 0 {
		return r.patchHosts(ctx, map[string]any{"spec": map[string]any{"unschedulable": false}})
	}
	r.logf("creating a backlog of %d VMs on cordoned hosts", n)
	start := time.Now()
	if err := parallel(ctx, n, 32, func(i int) error { return r.create(ctx, r.newVM(fmt.Sprintf("bl-%05d", i), "")) }); err != nil {
		return err
	}
	r.res.Created = time.Since(start)
	r.logf("created %d VMs in %s", n, r.res.Created.Round(time.Millisecond))
	if err := r.waitCount(ctx, "marked unschedulable", int64(n), func() int64 {
		return r.count("bl", "unschedulable")
	}, nil); err != nil {
		return err
	}

	r.logf("uncordoning %d hosts", r.cfg.Hosts)
	if r.mem != nil {
		r.mem.setPhase("placement until Running")
	}
	r.nextProfiles()
	waits := append(slices.Clone(placementWaits), placementSizes...)
	var before map[string]*histo
	if len(r.servers) == 1 {
		before, _ = scrapeHistos(ctx, r.servers[0], waits...)
	}
	a := r.sample(ctx)
	var killedAt time.Time
	bound := func() int64 { return r.count("bl", "bound") }
	// With --kill-leader the leader dies as soon as placement is seen
	// to have begun, while the hosts are still being uncordoned: the
	// leader binds in batches (up to eight of 256 in flight) and, at a
	// thousand hosts, binds every VM before the last uncordon lands, so
	// a kill after uncordoning would come after placement, and test
	// nothing. killed is closed once that is done (or never needed).
	killed := make(chan struct{})
	if r.cfg.KillLeader {
		go func() {
			defer close(killed)
			if r.waitCount(ctx, "bound", 1, bound, nil) != nil {
				return
			}
			r.logf("killing the leader, server %s (SIGKILL), with %d/%d bound", leader.name, bound(), n)
			killedAt = time.Now()
			leader.kill()
			r.res.LeaderKilled = leader.name
			r.failover = r.awaitNewLeader(ctx, r.ec, leader, killedAt)
		}()
	} else {
		close(killed)
	}
	t0 := time.Now()
	if err := r.patchHosts(ctx, map[string]any{"spec": map[string]any{"unschedulable": false}}); err != nil {
		<-killed
		return err
	}
	// The bench's own count lags when its process is busy (a thousand
	// agents in it): the binding times are the servers'.
	r.logf("uncordoned %d hosts in %s, %d VMs seen bound by then", r.cfg.Hosts, time.Since(t0).Round(time.Millisecond), bound())
	<-killed
	if err := r.waitCount(ctx, "bound", int64(n), bound, nil); err != nil {
		return err
	}
	b := r.sample(ctx)
	if before != nil {
		if after, err := scrapeHistos(ctx, r.servers[0], waits...); err == nil {
			for _, w := range placementWaits {
				r.res.PlacementWaits = append(r.res.PlacementWaits, fmt.Sprintf("%s: %s", w, deltaOf(before[w], after[w])))
			}
			for _, w := range placementSizes {
				r.res.PlacementWaits = append(r.res.PlacementWaits, fmt.Sprintf("%s: %s", w, sizeDelta(before[w], after[w], "batches")))
			}
		}
	}
	r.mu.Lock()
	last := r.lastBound
	var after time.Time
	if !killedAt.IsZero() {
		for name, tr := range r.vms {
			if strings.HasPrefix(name, "bl-") && tr.bound.After(killedAt) && (after.IsZero() || tr.bound.Before(after)) {
				after = tr.bound
			}
		}
	}
	r.mu.Unlock()
	r.res.Placed = last.Sub(t0)
	r.res.PlacementRate = float64(n) / r.res.Placed.Seconds()
	r.res.PlacementWrites, r.res.PlacementCPU = rates(a, b)
	switch {
	case !killedAt.IsZero() && after.IsZero():
		r.logf("no VM was bound after the leader was killed: its batches in flight had bound them all (a larger backlog tests the failover)")
	case !killedAt.IsZero():
		r.res.Gap = after.Sub(killedAt)
		r.logf("placement resumed %s after the leader was killed", r.res.Gap.Round(time.Millisecond))
	}
	r.logf("placed %d VMs in %s: %.0f/s", n, r.res.Placed.Round(time.Millisecond), r.res.PlacementRate)
	if err := r.waitCount(ctx, "Running", int64(n), func() int64 {
		return r.count("bl", "running")
	}, nil); err != nil {
		return err
	}
	r.res.BacklogRunning = time.Since(t0)
	r.nextProfiles()
	c := r.sample(ctx)
	r.res.BacklogCPUPerVM = serverCPUSince(a, c) / time.Duration(n)
	r.res.BacklogWritesPerVM = float64(c.rev-a.rev) / float64(n)
	r.res.BacklogHostsCPUPerVM = (c.hostsCPU - a.hostsCPU) / time.Duration(n)
	r.logf("all %d Running %s after uncordoning", n, r.res.BacklogRunning.Round(time.Millisecond))
	return nil
}

// createToRunning creates cfg.RunningVMs at cfg.Rate (open loop: each
// create at its time, whatever the others do) and measures each from
// sending its create to its guest's first output.
func (r *scaleRun) createToRunning(ctx context.Context) error {
	n := r.cfg.RunningVMs
	if n == 0 {
		return nil
	}
	if f := r.failover; f != nil {
		// Until a server leads again no VM is placed: a create then
		// waits for the failover, which is reported as such, not as
		// create→Running (it was, before: a p95 of 13 s in the HA run
		// at 1,000 hosts, most of it the killed leader's session).
		t := time.Now()
		if !f.wait(ctx) {
			return fmt.Errorf("waiting for a server to lead after %s was killed: %w", f.killed.name, ctx.Err())
		}
		r.res.NewLeader, r.res.NewLeaderAfter, r.res.RunWaited = f.leader.name, f.after, time.Since(t)
	}
	r.logf("creating %d VMs at %.0f/s", n, r.cfg.Rate)
	if err := r.atRate(ctx, n, "run-%05d", func(int) string { return "" }); err != nil {
		return err
	}
	if err := r.waitCount(ctx, "Running", int64(n), func() int64 {
		return r.count("run", "running")
	}, nil); err != nil {
		return err
	}
	var d []time.Duration
	r.mu.Lock()
	for name, tr := range r.vms {
		if strings.HasPrefix(name, "run-") {
			d = append(d, tr.running.Sub(tr.sent))
		}
	}
	r.res.RunSlowest = r.slowest("run", slowestShown)
	r.res.RunSteps = r.runSteps("run")
	r.mu.Unlock()
	r.res.RunP50, r.res.RunP95, r.res.RunMax = pct(d, 50), pct(d, 95), pct(d, 100)
	r.logf("create→Running p50 %s p95 %s", secs(r.res.RunP50), secs(r.res.RunP95))
	return nil
}

// atRate creates n VMs named by format at cfg.Rate per second.
func (r *scaleRun) atRate(ctx context.Context, n int, format string, host func(int) string) error {
	gap := time.Duration(float64(time.Second) / r.cfg.Rate)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var first error
	var once sync.Once
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * gap)))
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.create(ctx, r.newVM(fmt.Sprintf(format, i), host(i))); err != nil {
				once.Do(func() { first = err })
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// fanout creates one VM bound to each host at cfg.Rate and measures from
// sending the create to the host's agent looking the VM up: the API
// server must match every VM event against every agent's watch.
func (r *scaleRun) fanout(ctx context.Context) error {
	n := r.cfg.Hosts
	r.logf("creating %d VMs, one bound to each host, at %.0f/s", n, r.cfg.Rate)
	hist := r.deliveryBuckets(ctx)
	phases := r.createPhases(ctx)
	if err := r.atRate(ctx, n, "fan-%05d", func(i int) string { return r.hostNames[i] }); err != nil {
		return err
	}
	if phases != nil {
		r.res.FanCreatePhases = createPhasesDelta(phases, r.createPhases(ctx))
	}
	seen := func() int64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		var k int64
		for name, tr := range r.vms {
			if _, ok := r.lookups[tr.uid]; ok && tr.uid != "" && strings.HasPrefix(name, "fan-") {
				k++
			}
		}
		return k
	}
	if err := r.waitCount(ctx, "seen by their agents", int64(n), seen, nil); err != nil {
		return err
	}
	after := r.deliveryBuckets(ctx)
	r.res.FanServerP50, r.res.FanServerEvents = bucketQuantile(hist, after, 0.5)
	r.res.FanServerP99, _ = bucketQuantile(hist, after, 0.99)
	var d, dc, dd []time.Duration
	r.mu.Lock()
	for name, tr := range r.vms {
		if strings.HasPrefix(name, "fan-") {
			d = append(d, r.lookups[tr.uid].Sub(tr.sent))
			dc = append(dc, tr.created.Sub(tr.sent))
			dd = append(dd, r.lookups[tr.uid].Sub(tr.created))
		}
	}
	r.mu.Unlock()
	r.res.FanP50, r.res.FanP99, r.res.FanMax = pct(d, 50), pct(d, 99), pct(d, 100)
	r.res.FanCreateP50, r.res.FanCreateP99 = pct(dc, 50), pct(dc, 99)
	r.res.FanDeliverP50, r.res.FanDeliverP99 = pct(dd, 50), pct(dd, 99)
	r.logf("create→agent p50 %s p99 %s", ms(r.res.FanP50), ms(r.res.FanP99))
	return nil
}

// listAll lists every VM three times and keeps the median.
func (r *scaleRun) listAll(ctx context.Context) error {
	var d []time.Duration
	for range 3 {
		t0 := time.Now()
		objs, _, err := r.admin.List(ctx, "VirtualMachine", "", client.ListOptions{AllTenants: true})
		if err != nil {
			return fmt.Errorf("listing every VM: %w", err)
		}
		d = append(d, time.Since(t0))
		r.res.ListCount = len(objs)
	}
	r.res.ListAll = pct(d, 50)
	// The server's part: the same list read to its end, not decoded.
	k, _ := api.KindByName("VirtualMachine")
	d = d[:0]
	for range 3 {
		t0 := time.Now()
		if err := r.admin.Do(ctx, http.MethodGet, api.CollectionPath(k, ""), nil, nil); err != nil {
			return fmt.Errorf("listing every VM: %w", err)
		}
		d = append(d, time.Since(t0))
	}
	r.res.ListBytes = pct(d, 50)
	return nil
}

// final reads the servers' memory and etcd's size, and checks that no VM
// was bound or started twice and none was lost.
func (r *scaleRun) final(ctx context.Context) {
	for _, p := range r.servers {
		if p.alive() {
			if st, err := readProc(p.cmd.Process.Pid); err == nil {
				r.res.ServerRSS += st.rss
				r.res.ServerPeakRSS += st.peak
				r.res.ServerRSSAnon += st.rssAnon
				r.res.ServerRSSFile += st.rssFile
			}
			if p.heapProfile != "" {
				if err := p.writeHeap(ctx); err != nil {
					r.logf("%v", err)
				} else {
					r.logf("server %s's heap: %s", p.name, p.heapProfile)
				}
			}
		}
	}
	s := r.sample(ctx)
	r.res.DBSize, r.res.DBInUse = s.db, s.dbInUse
	r.res.Conns = r.apiConns()
	r.res.Flapped = r.flapped(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	byUID := map[string]string{}
	for name, tr := range r.vms {
		byUID[tr.uid] = name
		if len(tr.hosts) > 1 {
			r.res.BoundTwice = append(r.res.BoundTwice, fmt.Sprintf("%s on %v", name, tr.hosts))
		}
		if tr.running.IsZero() && !strings.HasPrefix(name, "fan-") {
			r.res.Lost = append(r.res.Lost, name)
		}
	}
	for id, hosts := range r.starts {
		if len(hosts) > 1 {
			r.res.BoundTwice = append(r.res.BoundTwice, fmt.Sprintf("%s started on %v", byUID[id], hosts))
		}
	}
	r.res.Retries = r.retries.Load()
	r.res.LoadEnd = loadAverage()
	if st, err := readProc(os.Getpid()); err == nil {
		r.res.HostsCPU = st.cpu
	}
	sort.Strings(r.res.BoundTwice)
	sort.Strings(r.res.Lost)
}

func (r *scaleRun) close() {
	if r.agentsCancel != nil {
		r.agentsCancel()
		done := make(chan struct{})
		go func() { r.agentsDone.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}
	if r.oldLog != nil {
		slog.SetDefault(r.oldLog)
	}
	if r.logFile != nil {
		r.logFile.Close()
	}
	if r.ec != nil {
		r.ec.Close()
	}
	for _, p := range r.servers {
		p.stop()
	}
}

// loadAverage is the machine's one-minute load average.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func (r *scaleRun) report(w io.Writer) {
	res, cfg := r.res, r.cfg
	ctl := "one server"
	if cfg.Servers == 3 {
		ctl = "three servers (HA)"
	}
	fmt.Fprintf(w, "Hearth at scale: %d simulated hosts (the agent with compute/computetest), %d VMs, %s, on %d CPUs\n",
		cfg.Hosts, cfg.VMs, ctl, runtime.NumCPU())
	fmt.Fprintf(w, "load average %s at the start, %s at the end; the simulated hosts used %s of CPU\n\n",
		res.LoadStart, res.LoadEnd, res.HostsCPU.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("hosts joined and Ready", "%s", res.Joined.Round(time.Millisecond))
	row("idle hosts' heartbeats", "%.1f etcd writes/s, server CPU %.2f cores, etcd DB %+.1f MiB/min",
		res.HeartbeatWrites, res.HeartbeatCPU, float64(res.HeartbeatDBGrowth)/(1<<20))
	if cfg.VMs > 0 {
		row("backlog created", "%d VMs in %s (%.0f/s)", cfg.VMs, res.Created.Round(time.Millisecond), float64(cfg.VMs)/res.Created.Seconds())
		row("placement (pending → bound)", "%d in %s: %.0f/s (%.0f etcd writes/s, server CPU %.2f cores)",
			cfg.VMs, res.Placed.Round(time.Millisecond), res.PlacementRate, res.PlacementWrites, res.PlacementCPU)
		for i, w := range res.PlacementWaits {
			what := ""
			if i == 0 {
				what = "  while placing"
			}
			row(what, "%s", w)
		}
		row("backlog Running", "%s after uncordoning; per VM until then: server CPU %s, %.1f etcd writes, simulated hosts' CPU %s",
			res.BacklogRunning.Round(time.Millisecond), ms(res.BacklogCPUPerVM), res.BacklogWritesPerVM, ms(res.BacklogHostsCPUPerVM))
	}
	if res.LeaderKilled != "" {
		row("leader killed", "server %s (SIGKILL) once placement began; placement resumed after %s", res.LeaderKilled, res.Gap.Round(time.Millisecond))
		if res.NewLeader != "" {
			row("  a new leader", "server %s, %s after the kill (create→Running waited %s for it)", res.NewLeader,
				res.NewLeaderAfter.Round(time.Millisecond), res.RunWaited.Round(time.Millisecond))
		}
	}
	if cfg.RunningVMs > 0 {
		row(fmt.Sprintf("create→Running at %.0f/s", cfg.Rate), "p50 %s, p95 %s, max %s (%d VMs)", secs(res.RunP50), secs(res.RunP95), secs(res.RunMax), cfg.RunningVMs)
		row("  by step", "%s", res.RunSteps)
		for i, s := range res.RunSlowest {
			what := ""
			if i == 0 {
				what = "  the slowest"
			}
			row(what, "%s", s)
		}
	}
	row("watch to each agent", "p50 %s, p99 %s, max %s (create naming a host → its agent looks the VM up; %d hosts)", ms(res.FanP50), ms(res.FanP99), ms(res.FanMax), cfg.Hosts)
	row("  of which the create", "p50 %s, p99 %s (sent → answered); answered → agent p50 %s, p99 %s", ms(res.FanCreateP50), ms(res.FanCreateP99), ms(res.FanDeliverP50), ms(res.FanDeliverP99))
	row("  the create in the server", "%s", res.FanCreatePhases)
	row("  of which the server's", "p50 ≤ %s, p99 ≤ %s (read from etcd → the agent's connection flushed; %.0f events to agents, server's histogram)",
		ms(res.FanServerP50), ms(res.FanServerP99), res.FanServerEvents)
	row("list every VM", "%s (%d VMs, median of 3); %s read without decoding", res.ListAll.Round(time.Millisecond), res.ListCount, res.ListBytes.Round(time.Millisecond))
	limit := ""
	if cfg.ServerMemoryLimit != "" {
		limit = ", GOMEMLIMIT " + cfg.ServerMemoryLimit
	}
	row("server memory", "RSS %s (peak %s%s): %s its own, %s files mapped (etcd's database, the binary)", mib(res.ServerRSS), mib(res.ServerPeakRSS), limit,
		mib(res.ServerRSSAnon), mib(res.ServerRSSFile))
	for i, m := range res.Memory {
		what := ""
		if i == 0 {
			what = "  peak by phase"
		}
		row(what, "%s: %s", m.Phase, m)
	}
	row("etcd database", "%s (%s in use)", mib(res.DBSize), mib(res.DBInUse))
	row("API connections", "%d open at the end, at most %d seen (%d hosts)", res.Conns, res.ConnsPeak, cfg.Hosts)
	row("requests retried (503, timeout)", "%d", res.Retries)
	row("bound or started twice", "%d", len(res.BoundTwice))
	row("lost (never Running)", "%d", len(res.Lost))
	row("hosts declared NotReady", "%d (after all were Ready, or not Ready at the end)", len(res.Flapped))
	tw.Flush()
	for _, s := range slices.Concat(res.BoundTwice, res.Lost, res.Flapped) {
		fmt.Fprintln(w, "  ", s)
	}
}

// ErrScaleFaults is returned (wrapped) when a run saw VMs bound twice or
// lost.
var ErrScaleFaults = errors.New("VMs bound twice or lost")

// flapped lists the simulated hosts declared NotReady after every host
// was Ready (host liveness's HostNotReady event: its lease renewal came
// too late), and those not Ready at the end.
func (r *scaleRun) flapped(ctx context.Context) []string {
	if r.readyAt.IsZero() {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	evs, _, err := r.admin.List(ctx, "Event", "", client.ListOptions{AllTenants: true, FieldSelector: "spec.reason=HostNotReady"})
	if err != nil {
		r.logf("listing HostNotReady events: %v", err)
	}
	for _, o := range evs {
		ev := o.(*api.Event)
		if t := ev.Spec.LastTimestamp; ev.Spec.InvolvedObject.Kind == "Host" && t != nil && t.After(r.readyAt) && !seen[ev.Spec.InvolvedObject.Name] {
			seen[ev.Spec.InvolvedObject.Name] = true
			out = append(out, fmt.Sprintf("%s: HostNotReady at %s: %s", ev.Spec.InvolvedObject.Name, t.Format(time.RFC3339), ev.Spec.Message))
		}
	}
	hosts, _, err := r.admin.List(ctx, "Host", "", client.ListOptions{})
	if err != nil {
		r.logf("listing hosts for their Ready condition: %v", err)
	}
	for _, o := range hosts {
		h := o.(*api.Host)
		if c := h.Status.Condition(api.ConditionReady); !seen[h.Metadata.Name] && (c == nil || c.Status != api.ConditionTrue) {
			out = append(out, fmt.Sprintf("%s: not Ready at the end (%s)", h.Metadata.Name, h.Status.Phase))
		}
	}
	return out
}
