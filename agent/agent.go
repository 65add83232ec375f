// Package agent is the node agent: one per host. It joins the cluster
// (which registers its Host), keeps a lease, and converges the host to
// what the API says is placed on it (VMs and their disks). It never takes
// orders: it watches, compares and writes status.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/agent/console"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/reconcile"
	"hearth.dev/hearth/serving"
	"hearth.dev/hearth/storage"
	"hearth.dev/hearth/version"
)

// Config is what `hearth agent` takes.
type Config struct {
	// Server is the API's URL.
	Server string
	// JoinToken registers the host the first time; afterwards the host's
	// own credential in DataDir is used. JoinTokenFile holds it instead
	// (see client.JoinConfig).
	JoinToken     string
	JoinTokenFile string
	// CAFile is the cluster CA (the server's DATA-DIR/ca.crt), which the
	// first connection must trust before it has a credential.
	CAFile string
	// Name of the Host (default the machine's hostname).
	Name string
	// DataDir holds the credential, VM directories and the image cache.
	DataDir string
	// Address is the host's underlay IP: other hosts' tunnels and the
	// server's console connections reach it there. The first join records
	// it in the Host's spec.
	Address string
	// Listen is the agent's HTTPS address for consoles (default
	// ADDRESS:9443). Port 0 takes any free port (many agents in one
	// process, as `hearth bench scale` runs them); the Host's
	// status.agentURL names the port taken.
	Listen string
	// ConsoleLimits are the console endpoint's timeouts and connection
	// limit (zero fields take serving's defaults).
	ConsoleLimits serving.Limits
	// Driver runs VMs (default QEMU).
	Driver compute.Driver
	// NoHostChecks leaves out the host checks (QEMU, KVM, the kernel,
	// disk space: `hearth doctor --role agent`), for a simulated host
	// whose Driver runs no hypervisor: a thousand of them in one
	// process (`hearth bench scale`) would each run QEMU to check the
	// same machine. The Host is then Ready while it beats.
	NoHostChecks bool
	// ShutdownTimeout is how long a guest gets to power off (ACPI) before
	// it is killed.
	ShutdownTimeout time.Duration
	// Resync is how often every VM is compared again even without changes.
	Resync time.Duration
	// VMNice is the CPU niceness VMs run at (see compute.QEMUOptions.Nice).
	VMNice int
	// MetricsListen is where the agent serves Prometheus metrics over
	// plain HTTP (GET /metrics); empty serves none.
	MetricsListen string
	// StatsInterval is how often the host and its VMs are measured for
	// the metrics and the stats history (default DefaultStatsInterval).
	StatsInterval time.Duration
	// ConsoleLogMax caps each VM's console log, in bytes (default
	// DefaultConsoleLogMax, at least MinConsoleLogMax): past it, the agent
	// keeps the log as console.log.1 and empties console.log, so a VM's
	// logs take at most about three times this on disk.
	ConsoleLogMax int64
	// AllowFileDirs are the directories shared Images with a file:// URL
	// may name files in (--allow-file-dir). With none, the agent reads no
	// file:// image at all; a tenant's image never may.
	AllowFileDirs []string
	// UnderlayDevice is the link holding Address that tenant networks'
	// VXLAN rides on. Setting it turns tenant networking on: the agent
	// then makes its networks (package dataplane), plugs every NIC into
	// its network and serves DHCP; without it, VMs' NICs are unplugged.
	UnderlayDevice string
	// ExternalInterfaces are this host's links to external networks (a
	// bridge the routers' external legs are plugged into), by the
	// ExternalNetwork's name; the entry "" is for any external network
	// without its own entry or spec.interface.
	ExternalInterfaces map[string]string
	// NetnsPrefix starts the names of the network namespaces of the
	// routers (default "hearth-"): hosts simulated on one machine (the
	// sandbox) each need their own.
	NetnsPrefix string
	// AllowFetchFrom lets downloads reach these addresses although the
	// fetch policy refuses them (loopback, link-local: see
	// storage.FetchPolicy). For tests that serve images on loopback; it
	// is no flag.
	AllowFetchFrom []netip.Prefix
	// MigrationTimeout bounds how long this host, as a live migration's
	// source, sends one VM: past it, the migration is cancelled (QMP
	// migrate_cancel) and the VM runs on here (default
	// DefaultMigrationTimeout; at most 5 minutes, the time a destination
	// waits).
	MigrationTimeout time.Duration
}

// writesInFlight is how many writes (VMs' status, reports) an agent has
// in flight at once, and eventsInFlight how many of its events; the rest
// wait their turn in the agent (client.LimitWrites). A write takes
// milliseconds when the server is idle, so a few at once keep up with
// any host's VMs; when the server is busy, what each host has in flight
// is what the server holds for it: eight requests, not the two dozen
// its VM workers and event writers would send. (Two and one held the
// server's memory lower still, but a placed backlog's Started events
// then drained for seconds after its VMs ran, and the next creates
// waited behind them: BENCHMARKS §9.)
const (
	writesInFlight = 4
	eventsInFlight = 4
)

const (
	// DefaultConsoleLogMax is the default cap of a VM's console log.
	DefaultConsoleLogMax = 8 << 20
	// MinConsoleLogMax is the smallest cap accepted. The log is checked
	// every few seconds, so a smaller one would not hold anyway.
	MinConsoleLogMax = 4 << 10
)

// CheckConsoleLogMax says what is wrong with n as a console log cap
// (Config.ConsoleLogMax).
func CheckConsoleLogMax(n int64) error {
	if n < MinConsoleLogMax {
		return fmt.Errorf("a console log cap of %d bytes is too small: want at least %s (the default is %s)",
			n, api.Bytes(MinConsoleLogMax), api.Bytes(DefaultConsoleLogMax))
	}
	return nil
}

// Agent is a running node agent.
type Agent struct {
	cfg    Config
	c      *client.Client
	rec    *client.Recorder
	ca     []byte
	kvm    bool
	kvmWhy string
	images *storage.ImageCache
	imgs   *imageState
	// cache is the agent's one set of informers, which every controller
	// reads (cache.go).
	cache   *cache
	vms     *vmController
	volumes *volumeController
	// pools are the drivers of the StoragePools volumes name (pools.go).
	pools *poolDrivers
	// net runs tenant networks (network.go); nil when they are off.
	net      *netController
	underlay dataplane.Underlay
	certFP   string
	mon      *monitor
	// specs are the VMs' specFiles, decoded (startedspecs.go).
	specs *startedSpecs
	// checks are the host's checks (hostchecks.go), reported with the
	// heartbeat.
	checks *hostChecks
	// beat is c without its limit of writesInFlight, for the heartbeat
	// alone (client.LimitWrites).
	beat *client.Client
	// adopted is closed once the VM controller has taken back the VMs
	// moving away that still run here (migrateadopt.go).
	adopted chan struct{}
}

// Run joins (if needed: joining registers the Host) and runs until ctx
// ends. A credential the server refuses (the Host was deleted, or its
// tokens revoked) is said once, and the agent waits for a new join token
// rather than exit (see client.WaitJoined); its VMs run on meanwhile.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		cfg.Name = strings.ToLower(strings.Split(h, ".")[0])
	}
	if es := api.ValidateName("name", cfg.Name); len(es) > 0 {
		return es
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "/var/lib/hearth-agent"
	}
	if cfg.VMNice < 0 || cfg.VMNice > 19 {
		return fmt.Errorf("vm-nice: %d is not a niceness from 0 to 19", cfg.VMNice)
	}
	if cfg.ConsoleLogMax == 0 {
		cfg.ConsoleLogMax = DefaultConsoleLogMax
	}
	if err := CheckConsoleLogMax(cfg.ConsoleLogMax); err != nil {
		return err
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 60 * time.Second
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.MigrationTimeout == 0 {
		cfg.MigrationTimeout = DefaultMigrationTimeout
	}
	if cfg.MigrationTimeout < 0 || cfg.MigrationTimeout > migrateTimeout {
		return fmt.Errorf("migration-timeout: %s is not between 0 and %s (the time a destination waits for a VM)", cfg.MigrationTimeout, migrateTimeout)
	}
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	if cfg.Listen == "" {
		host := cfg.Address
		if host == "" {
			host = "127.0.0.1"
		}
		cfg.Listen = net.JoinHostPort(host, "9443")
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "vms"), 0o700); err != nil {
		return err
	}
	if cfg.Driver == nil {
		cfg.Driver = compute.NewQEMU(compute.QEMUOptions{Nice: cfg.VMNice})
	}
	for {
		err := run(ctx, cfg)
		if !errors.Is(err, client.ErrRevoked) || ctx.Err() != nil {
			return err
		}
		// Refused while running: the VMs go on; wait for a new join
		// token (client.WaitJoined says so once) and start again.
	}
}

// testHookRun, if set (by tests), is given each agent once it is wired,
// before it starts: benchmarks drive its controllers directly.
var testHookRun func(*Agent)

// run joins (or finds its credential refused and waits for a new join
// token) and runs the agent until ctx ends, or until the server refuses
// its credential, which it returns as client.ErrRevoked.
func run(ctx context.Context, cfg Config) error {
	c, creds, err := client.WaitJoined(ctx, client.JoinConfig{Server: cfg.Server, JoinToken: cfg.JoinToken, JoinTokenFile: cfg.JoinTokenFile,
		CAFile: cfg.CAFile, Name: cfg.Name, Address: cfg.Address, DataDir: cfg.DataDir})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Images are fetched with no credential, never from this machine
	// (its loopback services, its own address) or link-local addresses;
	// uploaded images come from the API server's content endpoint of
	// their Image, the only request that carries the host's credential
	// (ensureImage).
	policy := storage.FetchPolicy{Allow: cfg.AllowFetchFrom}
	listenHost, _, _ := net.SplitHostPort(cfg.Listen)
	for _, a := range []string{cfg.Address, listenHost} {
		if addr, err := netip.ParseAddr(a); err == nil && api.FetchAddrRefusal(addr) == "" {
			policy.Refuse = append(policy.Refuse, addr) // a loopback one is refused anyway
		}
	}
	// The agent's writes wait their turn here rather than in the
	// server (client/writelimit.go), its heartbeat excepted: a host's
	// lease is never renewed late for its VMs' writes. Its events have
	// their own turn, so that a VM's status never waits behind a
	// backlog of other VMs' events.
	beat := c
	c = c.LimitWrites(writesInFlight)
	rec := client.NewRecorder(beat.LimitWrites(eventsInFlight), "host/"+cfg.Name).Background(ctx)
	a := &Agent{cfg: cfg, c: c, beat: beat, ca: []byte(creds.CA), rec: rec,
		images: &storage.ImageCache{Dir: filepath.Join(cfg.DataDir, "images"), Client: storage.NewFetchClient(policy),
			AllowedFileDirs: cfg.AllowFileDirs},
		imgs:  newImageState(),
		cache: newCache(c, cfg.Name, cfg.UnderlayDevice != ""), specs: &startedSpecs{}}
	a.pools = newPoolDrivers(a)
	a.mon = newMonitor(a, cfg.StatsInterval)
	ctlMetrics := reconcile.NewMetrics()
	ctx = reconcile.WithMetrics(ctx, ctlMetrics)
	if cfg.MetricsListen != "" {
		stop, err := a.serveMetrics(cfg.MetricsListen, a.newRegistry(ctlMetrics))
		if err != nil {
			return err
		}
		defer stop()
	}
	if d, ok := cfg.Driver.(compute.KVMDetector); ok {
		a.kvm, a.kvmWhy = d.DetectKVM(ctx)
	} else {
		a.kvm, a.kvmWhy = compute.DetectKVM(ctx)
	}
	a.checks = newHostChecks(cfg)
	if !cfg.NoHostChecks {
		a.checks.run(ctx)
		go a.checks.loop(ctx)
	}
	slog.Info("agent starting", "host", cfg.Name, "server", creds.Server, "kvm", a.kvm, "kvmReason", a.kvmWhy)

	listener, err := a.startConsole(ctx)
	if err != nil {
		return err
	}
	defer func() {
		cancel() // first, so the console server knows it was asked to stop
		listener.Close()
	}()
	if err := a.checkHost(ctx); err != nil {
		return err
	}
	a.vms = newVMController(a)
	a.adopted = make(chan struct{})
	a.volumes = newVolumeController(a)
	if cfg.UnderlayDevice != "" {
		plane, err := a.startNetworking()
		if err != nil {
			return err
		}
		defer plane.Close()
	} else {
		slog.Info("tenant networking is off (no underlay device): VMs' NICs are unplugged")
	}
	a.wire()
	if h := testHookRun; h != nil {
		h(a)
	}
	a.cache.run(ctx)
	go a.mon.run(ctx)
	go a.pools.reportUsage(ctx)
	errc := make(chan error, 4)
	go func() { errc <- a.heartbeat(ctx) }()
	go func() { errc <- a.vms.run(ctx) }()
	go func() { errc <- a.volumes.run(ctx) }()
	if a.net != nil {
		go func() { errc <- a.net.run(ctx) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// startNetworking makes the host's data plane. It changes nothing on the
// host: the network controller's first Apply, once the cache is synced,
// does.
func (a *Agent) startNetworking() (dataplane.Plane, error) {
	addr, err := netip.ParseAddr(a.cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %q is not an IP address; tenant networks need this host's underlay address (with the underlay device %s)", a.cfg.Address, a.cfg.UnderlayDevice)
	}
	a.underlay = dataplane.Underlay{Device: a.cfg.UnderlayDevice, Address: addr.Unmap()}
	plane, err := dataplane.New(dataplane.Config{NetnsPrefix: a.cfg.NetnsPrefix,
		Logf: func(format string, args ...any) { slog.Debug(fmt.Sprintf(format, args...)) }})
	if err != nil {
		return nil, err
	}
	a.net = newNetController(a, plane)
	return plane, nil
}

// checkHost reads the Host that joining made. Its spec is the
// administrator's: the agent only says where it differs from what the
// agent was told.
func (a *Agent) checkHost(ctx context.Context) error {
	obj, err := a.c.Get(ctx, "Host", "", a.cfg.Name)
	if api.ReasonOf(err) == api.ReasonUnauthorized {
		return fmt.Errorf("%w (the server says: %v)", client.ErrRevoked, err)
	}
	if err != nil {
		// The heartbeat retries; nothing here is needed to run.
		slog.Warn("reading this host's Host", "host", a.cfg.Name, "err", err)
		return nil
	}
	if h := obj.(*api.Host); a.cfg.Address != "" && h.Spec.Address != a.cfg.Address {
		slog.Warn("the Host's spec.address differs from the address this agent was given; a cluster admin changes it (hearth apply); hosts do not write their spec",
			"host", a.cfg.Name, "spec.address", h.Spec.Address, "address", a.cfg.Address)
	}
	return nil
}

// facts are what the agent reports about the machine.
func (a *Agent) facts() api.HostFacts {
	var u unix.Utsname
	_ = unix.Uname(&u)
	var st unix.Statfs_t
	var disk int64
	if unix.Statfs(a.cfg.DataDir, &st) == nil {
		disk = int64(st.Blocks) * st.Bsize
	}
	return api.HostFacts{
		CPUs:            runtime.NumCPU(),
		Memory:          api.Bytes(memTotal()),
		Disk:            api.Bytes(disk),
		Architecture:    archName(runtime.GOARCH),
		KVM:             a.kvm,
		KernelVersion:   unix.ByteSliceToString(u.Release[:]),
		AgentVersion:    version.Version,
		AgentURL:        "https://" + a.cfg.Listen,
		AgentCertSHA256: a.certFP,
	}
}

func archName(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	default:
		return goarch
	}
}

func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	return 0
}

// statusEvery is how often an agent whose server keeps host leases still
// writes its Host's status (phase and lastHeartbeat): for people reading
// it, and as the lease of last resort. Between, beats renew the lease and
// write nothing.
const statusEvery = 5 * time.Minute

// heartbeat renews the host's lease every quarter of it: through the
// server's host lease (POST .../hosts/NAME/heartbeat, no write), with its
// status (phase, status.lastHeartbeat) written on the first beat, every
// statusEvery, when the Host's phase is not the one its checks give
// (marked NotReady while away) or the checks changed, and whenever a beat
// failed, the machine's facts and conditions with it. A server without host leases (an
// older one) gets the status written at every beat, as it expects. A
// refused credential ends it with client.ErrRevoked.
func (a *Agent) heartbeat(ctx context.Context) error {
	full, leases, again := true, true, false
	var wrote time.Time
	lease := time.Duration(api.DefaultHostLeaseSeconds) * time.Second
	for {
		var err error
		if full || !leases || time.Since(wrote) >= statusEvery {
			var h *api.Host
			if h, err = a.writeHostStatus(ctx, full); err == nil {
				wrote, full = time.Now(), false
				lease = time.Duration(h.Spec.LeaseSeconds) * time.Second
			}
		}
		if err == nil && leases {
			var hb api.HostLeaseRenewal
			hb, err = a.beat.RenewHostLease(ctx, a.cfg.Name)
			switch {
			case err == nil:
				lease = time.Duration(hb.LeaseSeconds) * time.Second
				if phase, changed := a.checks.phase(); (changed || hb.Phase != phase) && !again {
					// Marked NotReady while away, or the host's checks
					// changed: say so at once.
					full, again = true, true
					continue
				}
			case api.IsNotFound(err) && strings.Contains(err.Error(), "no such endpoint"):
				slog.Info("the server keeps no host leases (an older server): writing the Host's status at every heartbeat")
				leases, err = false, nil
				continue
			}
		}
		again = false
		switch {
		case ctx.Err() != nil:
			return nil
		case api.ReasonOf(err) == api.ReasonUnauthorized:
			return fmt.Errorf("%w (the server says: %v)", client.ErrRevoked, err)
		case err != nil:
			// A Host not found is one deleted a moment ago: the
			// credential goes with it, and the next beat is refused.
			slog.Warn("heartbeat failed", "err", err)
			full = true
		}
		every := max(lease/4, time.Second)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// writeHostStatus writes the Host's phase (from the host's checks) and
// lastHeartbeat, with the machine's facts and the conditions when full.
func (a *Agent) writeHostStatus(ctx context.Context, full bool) (*api.Host, error) {
	now := time.Now().UTC()
	phase, _ := a.checks.phase()
	beat := api.HostHeartbeat{Phase: phase, LastHeartbeat: now}
	if full {
		facts := a.facts()
		beat.HostFacts = &facts
		beat.Phase, beat.Conditions = a.checks.status(now)
	}
	out, err := a.beat.PatchStatus(ctx, "Host", "", a.cfg.Name, beat)
	if err != nil {
		return nil, err
	}
	h := out.(*api.Host)
	h.Spec.Default()
	return h, nil
}

// startConsole serves VM consoles and logs to the server over mutual TLS.
func (a *Agent) startConsole(ctx context.Context) (net.Listener, error) {
	host, _, _ := net.SplitHostPort(a.cfg.Listen)
	cert, fp, err := console.LoadOrCreateCert(a.cfg.DataDir, []string{host})
	if err != nil {
		return nil, err
	}
	a.certFP = fp
	tlsConf, err := console.ServerTLS(cert, a.ca)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("console endpoint on %s: %w", a.cfg.Listen, err)
	}
	// The address taken, for status.agentURL (the port may have been 0).
	a.cfg.Listen = net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	srv := serving.New("the agent's console endpoint", ln, a.endpoint(), a.cfg.ConsoleLimits, nil)
	go func() {
		if err := srv.Serve(tls.NewListener(srv.Listener, tlsConf)); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
			slog.Error("console listener stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	return ln, nil
}

// vmDir is where the VM with uid keeps its runtime files.
func (a *Agent) vmDir(uid string) (string, bool) {
	if uid == "" || strings.ContainsAny(uid, "/.") {
		return "", false
	}
	dir := filepath.Join(a.cfg.DataDir, "vms", uid)
	if _, err := os.Stat(dir); err != nil {
		return "", false
	}
	return dir, true
}
