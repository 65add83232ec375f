// Package boot is `hearth boot`: the network boot service of one
// provisioning network. It answers DHCP (full, proxy or off), serves the
// iPXE binaries over TFTP and, over HTTP, each machine's iPXE script, its
// rendered files, the artifacts it boots and the callback it reports to.
// Unknown machines that network-boot become Machines (discovery.go says
// which, and how many); every step of a machine's boot is an event on its
// timeline.
//
// Every client on the provisioning network is unauthenticated. What the
// service hands out that matters (a boot's files, artifacts and report
// token) it hands out only within a boot it issued (boots.go), to the
// address it knows the machine by (clients.go).
//
// The service talks to the API with a boot service's credential (it may
// discover Machines and write what it observes of them, and acts as no
// Host) and keeps what it serves in informer caches, so a machine's DHCP
// answer needs no API round trip, and nothing a client sends makes it ask
// the API about a machine it does not know.
package boot

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/boot/tftp"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/serving"
	"hearth.dev/hearth/storage"
)

// Config is what `hearth boot` takes.
type Config struct {
	Server, JoinToken, CAFile string
	// JoinTokenFile holds the join token instead of JoinToken.
	JoinTokenFile string
	// Name of the service's credential (default "boot"); its events'
	// source is boot/NAME.
	Name    string
	DataDir string
	// Interface is the provisioning network's interface, and Address this
	// service's IP on it.
	Interface string
	Address   netip.Addr
	// DHCPMode is full, proxy or off.
	DHCPMode           dhcp.Mode
	PoolStart, PoolEnd netip.Addr
	Router             netip.Addr
	DNS                []netip.Addr
	// HTTPListen is where the HTTP side listens (default ADDRESS:8080).
	HTTPListen string
	// TFTPListen (default ADDRESS:69).
	TFTPListen string
	// HTTPLimits are the HTTP side's timeouts and connection limit (zero
	// fields take serving's defaults); artifact downloads get deadlines
	// that move with their progress.
	HTTPLimits serving.Limits
	// IPXEDir holds the iPXE binaries (Debian's ipxe package: /usr/lib/ipxe).
	IPXEDir string
	// UEFIBinary is ipxe.efi (default, with its own drivers) or snponly.efi
	// (the firmware's network driver).
	UEFIBinary string
	// Site that discovered machines join.
	Site string
	// MaxDiscovered caps the machines waiting in phase Discovered: while
	// that many wait, no new MAC is discovered. 0 is
	// DefaultMaxDiscovered; a negative number sets no cap.
	MaxDiscovered int
	// MetricsListen is where Prometheus metrics are served over plain
	// HTTP (GET /metrics); empty serves none.
	MetricsListen string
	// CredentialCheck is how often the service asks whether its
	// credential still holds (default 30s): once refused, it stops
	// serving and waits for a new join token.
	CredentialCheck time.Duration
	// AllowFileDirs are the directories profiles' file:// kernels and
	// initrds may be in (--allow-file-dir). With none, file:// is refused.
	AllowFileDirs []string
	// AllowFetchFrom lets artifact downloads reach these addresses
	// although the fetch policy refuses them (see storage.FetchPolicy):
	// for tests, and no flag.
	AllowFetchFrom []netip.Prefix
}

// Service is a running boot service.
type Service struct {
	cfg      Config
	c        *client.Client
	rec      *client.Recorder
	bootURL  string
	key      []byte // signs the boots' report tokens
	machines *client.Informer
	profiles *client.Informer
	keys     *client.Informer
	sites    *client.Informer
	images   *storage.ImageCache
	boots    *bootTable
	dhcp     *dhcp.Server // nil with DHCP off
	link     *linkView    // nil without an interface

	// sources and everyone limit discoveries (discovery.go); warnings
	// limit the Warning events that refused requests record per machine.
	sources, everyone, warnings *limiter

	mu       sync.Mutex
	byIP     map[netip.Addr]string // address → machine name, from DHCP
	learned  map[string]netip.Addr // lowercase MAC → its address, from DHCP (known machines only)
	byMAC    map[string]string     // lowercase MAC → machine name, from the cache
	macOf    map[string]string     // machine name → its MAC, to unindex deletions
	fresh    map[string]*api.Machine
	creating map[string]chan struct{}
	seen     map[string]time.Time // machine name → when lastSeen was last written
	updates  chan func(context.Context)

	capRefused  int
	capReported time.Time
	refusals    map[string]refusalCount

	// recordMu orders the write that records a boot (it clears a
	// stateless machine's host keys, from the update queue) and the
	// write of that boot's report, so a report that comes first is not
	// cleared by its own boot's record.
	recordMu sync.Mutex

	// limits are the HTTP server's, once it is built (artifact downloads
	// stream under its write timeout).
	limits  serving.Limits
	metrics *metrics
}

// Run serves until ctx ends. A credential the server refuses while the
// service runs (its boot credential revoked) stops serving: nothing is
// handed out on the strength of a credential that no longer holds. Run
// then waits for a new join token (client.WaitJoined says so once) and
// serves again.
//
// The metrics endpoint outlives the runs, so its counters go on across a
// new credential and its address is not listened on twice.
func Run(ctx context.Context, cfg Config) error {
	m := newMetrics()
	if cfg.MetricsListen != "" {
		if err := m.serve(ctx, cfg.MetricsListen); err != nil {
			return err
		}
	}
	for {
		err := run(ctx, cfg, m)
		if !errors.Is(err, client.ErrRevoked) || ctx.Err() != nil {
			return err
		}
		slog.Error("boot service stopped serving: its credential was refused", "err", err)
	}
}

func run(ctx context.Context, cfg Config, m *metrics) error {
	if cfg.Name == "" {
		cfg.Name = "boot"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "/var/lib/hearth-boot"
	}
	if !cfg.Address.IsValid() {
		return fmt.Errorf("no address: the boot service needs its IP on the provisioning network")
	}
	if cfg.HTTPListen == "" {
		cfg.HTTPListen = netip.AddrPortFrom(cfg.Address, 8080).String()
	}
	if cfg.TFTPListen == "" {
		cfg.TFTPListen = netip.AddrPortFrom(cfg.Address, 69).String()
	}
	if cfg.IPXEDir == "" {
		cfg.IPXEDir = "/usr/lib/ipxe"
	}
	if cfg.UEFIBinary == "" {
		cfg.UEFIBinary = "ipxe.efi"
	}
	if cfg.MaxDiscovered == 0 {
		cfg.MaxDiscovered = DefaultMaxDiscovered
	}
	if cfg.CredentialCheck == 0 {
		cfg.CredentialCheck = 30 * time.Second
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	c, _, err := client.WaitJoined(ctx, client.JoinConfig{Server: cfg.Server, JoinToken: cfg.JoinToken, JoinTokenFile: cfg.JoinTokenFile,
		CAFile: cfg.CAFile, Name: cfg.Name, Boot: true, DataDir: cfg.DataDir})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// Everything started below ends with this run, which a refused
	// credential ends early.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key, err := loadKey(filepath.Join(cfg.DataDir, "report.key"))
	if err != nil {
		return err
	}
	s := &Service{cfg: cfg, c: c, rec: client.NewRecorder(c, "boot/"+cfg.Name).Background(ctx), key: key,
		bootURL:  "http://" + cfg.HTTPListen,
		machines: client.NewInformer(c, "Machine", "", client.ListOptions{}),
		profiles: client.NewInformer(c, "MachineProfile", "", client.ListOptions{}),
		keys:     client.NewInformer(c, "SSHKey", "", client.ListOptions{AllTenants: true}),
		sites:    client.NewInformer(c, "Site", "", client.ListOptions{}),
		images:   newArtifactCache(cfg),
		boots:    loadBoots(filepath.Join(cfg.DataDir, "boots.json")),
		sources:  newLimiter(sourceBurst, sourceInterval),
		everyone: newLimiter(globalBurst, globalInterval),
		warnings: newLimiter(warningBurst, warningInterval),
		byIP:     map[netip.Addr]string{},
		learned:  map[string]netip.Addr{},
		byMAC:    map[string]string{},
		macOf:    map[string]string{},
		fresh:    map[string]*api.Machine{},
		creating: map[string]chan struct{}{},
		seen:     map[string]time.Time{},
		updates:  make(chan func(context.Context), 1024),
		refusals: map[string]refusalCount{},
		metrics:  m,
	}
	// Every DHCP packet looks its machine up by MAC: keep an index. A
	// machine that is gone takes what was learned about it along.
	s.machines.OnChange(func(name string, obj api.Object) {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.fresh, name)
		if m, ok := obj.(*api.Machine); ok {
			if old := s.macOf[name]; old != strings.ToLower(m.Spec.MAC) {
				s.forgetLocked(name)
			}
			mac := strings.ToLower(m.Spec.MAC)
			s.byMAC[mac], s.macOf[name] = name, mac
			return
		}
		s.forgetLocked(name)
		delete(s.seen, name)
		// Not under s.mu: forget writes the boots file.
		go s.boots.forget(func(n, uid string) bool {
			if n != name {
				return true
			}
			o, ok := s.machines.Get(n)
			return ok && o.GetMetadata().UID == uid
		})
	})
	for _, inf := range []*client.Informer{s.machines, s.profiles, s.keys, s.sites} {
		go inf.Run(ctx)
		if err := inf.WaitSynced(ctx); err != nil {
			return err
		}
	}
	// Boots of machines deleted (or deleted and discovered again) while
	// the service was down end now.
	s.boots.forget(func(name, uid string) bool {
		o, ok := s.machines.Get(name)
		return ok && o.GetMetadata().UID == uid
	})
	go s.writer(ctx)

	// Every socket on the provisioning network is opened here, before any
	// goroutine serves it: in the network namespace this goroutine runs in
	// (a test may run the service in one it entered).
	errc := make(chan error, 5)
	go func() { errc <- client.UntilRevoked(ctx, c, cfg.CredentialCheck) }()
	hl, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("HTTP listener: %w", err)
	}
	defer hl.Close()
	tl, err := net.ListenPacket("udp4", cfg.TFTPListen)
	if err != nil {
		return fmt.Errorf("tftp %s: %w", cfg.TFTPListen, err)
	}
	defer tl.Close()
	var prefix netip.Prefix
	if cfg.Interface != "" {
		if prefix, err = interfacePrefix(cfg.Interface, cfg.Address); err != nil {
			return err
		}
		if s.link, err = newLinkView(cfg.Interface, prefix); err != nil {
			return err
		}
		defer s.link.close()
	}
	if cfg.DHCPMode != dhcp.ModeOff && cfg.DHCPMode != "" {
		if cfg.Interface == "" {
			return fmt.Errorf("DHCP in %s mode needs the interface of the provisioning network to serve on", cfg.DHCPMode)
		}
		s.dhcp, err = dhcp.New(dhcp.Config{Interface: cfg.Interface, ServerIP: cfg.Address, Mode: cfg.DHCPMode,
			Subnet: prefix, Router: cfg.Router, DNS: cfg.DNS, PoolStart: cfg.PoolStart, PoolEnd: cfg.PoolEnd,
			Handler: s, LeaseFile: filepath.Join(cfg.DataDir, "leases.jsonl")})
		if err != nil {
			return err
		}
		if err := s.dhcp.Listen(ctx); err != nil {
			return err
		}
		s.metrics.setLeases(s.dhcp)
		go func() { errc <- s.dhcp.Serve(ctx) }()
	}
	if cfg.Interface != "" {
		serveRA, err := announceNoIPv6(ctx, cfg.Interface)
		if err != nil {
			slog.Warn("not answering IPv6 router solicitations; firmware may wait for IPv6", "err", err)
		} else {
			go func() {
				if err := serveRA(); err != nil {
					slog.Warn("answering IPv6 router solicitations stopped; firmware may wait for IPv6", "err", err)
				}
			}()
		}
	}
	hs := serving.New("the boot service", hl, s.metrics.around(s.routes()), cfg.HTTPLimits, nil)
	// No client of the boot service sends more than a short request line
	// and a few headers.
	hs.MaxHeaderBytes = 16 << 10
	s.limits = hs.Limits
	go func() { errc <- ignoreClosed(hs.Serve(hs.Listener)) }()
	defer hs.Close()
	ts := &tftp.Server{Resolver: s.tftpFiles(), Observe: s.observeTFTP}
	go func() { errc <- ts.Serve(ctx, tl) }()

	slog.Info("boot service ready", "http", s.bootURL, "tftp", cfg.TFTPListen, "dhcp", cfg.DHCPMode, "interface", cfg.Interface)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// newArtifactCache is where profiles' kernels and initrds are fetched to
// and checked: by a client that never connects to this machine (its own
// address, loopback) or link-local addresses, and from files only under
// the directories the administrator allowed.
func newArtifactCache(cfg Config) *storage.ImageCache {
	policy := storage.FetchPolicy{Allow: cfg.AllowFetchFrom}
	if api.FetchAddrRefusal(cfg.Address) == "" {
		policy.Refuse = append(policy.Refuse, cfg.Address)
	}
	return &storage.ImageCache{Dir: filepath.Join(cfg.DataDir, "artifacts"), Client: storage.NewFetchClient(policy),
		AllowedFileDirs: cfg.AllowFileDirs}
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// interfacePrefix finds the prefix of addr on the named interface.
func interfacePrefix(name string, addr netip.Addr) (netip.Prefix, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == addr {
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("address %s is not an address of interface %s", addr, name)
}

// loadKey reads or creates the key that signs report tokens.
func loadKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) == 32 {
		return b, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, os.WriteFile(path, b, 0o600)
}

// writer applies status updates and events in order, off the DHCP path.
func (s *Service) writer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case fn := <-s.updates:
			fn(ctx)
		}
	}
}

// later queues work for the writer; when the queue is full the work is
// dropped (a timeline event is not worth stalling DHCP for).
func (s *Service) later(fn func(context.Context)) {
	select {
	case s.updates <- fn:
	default:
		slog.Warn("boot service is behind on API writes; dropping one")
	}
}

// event records a timeline event on a machine, later.
func (s *Service) event(name, typ, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.later(func(ctx context.Context) {
		if m := s.machine(name); m != nil {
			s.rec.Eventf(ctx, m, typ, reason, "%s", msg)
		}
	})
}

// machine returns a Machine by name: from the cache, or, for a machine
// this service discovered a moment ago that the cache has not caught up
// with, as it was created (its iPXE asks for its script right after the
// DHCP answer that created it). It never asks the API: a name a client
// sends is no reason for a round trip.
func (s *Service) machine(name string) *api.Machine {
	if o, ok := s.machines.Get(name); ok {
		return o.(*api.Machine)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fresh[name]
}

// machineByMAC finds a Machine by its MAC.
func (s *Service) machineByMAC(mac string) *api.Machine {
	mac = strings.ToLower(mac)
	s.mu.Lock()
	name, ok := s.byMAC[mac]
	if !ok {
		for n, m := range s.fresh {
			if m.Spec.MAC == mac {
				name, ok = n, true
			}
		}
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return s.machine(name)
}

// forgetLocked drops what the service learned about a machine's address.
func (s *Service) forgetLocked(name string) {
	mac := s.macOf[name]
	if a, ok := s.learned[mac]; ok && s.byIP[a] == name {
		delete(s.byIP, a)
	}
	delete(s.learned, mac)
	delete(s.byMAC, mac)
	delete(s.macOf, name)
}

// learn records the address DHCP gave or saw for a known machine.
func (s *Service) learn(name, mac string, ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mac = strings.ToLower(mac)
	if old, ok := s.learned[mac]; ok && old != ip && s.byIP[old] == name {
		delete(s.byIP, old)
	}
	s.learned[mac] = ip
	s.byIP[ip] = name
}

// machineName is the name a discovered machine gets from its MAC.
func machineName(mac string) string {
	return "mac-" + strings.ReplaceAll(strings.ToLower(mac), ":", "")
}

// firmwareOf reads the firmware from DHCP option 93 (RFC 4578).
func firmwareOf(req dhcp.Request) (arch, firmware string) {
	if !req.HasArch {
		return "", ""
	}
	switch req.Arch {
	case 0:
		return "x86_64", "bios"
	case 6:
		return "x86", "uefi"
	case 7, 9, 16:
		return "x86_64", "uefi"
	case 11, 19:
		return "arm64", "uefi"
	}
	return "", ""
}
