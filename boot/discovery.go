package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dhcp"
)

// Discovery turns an unknown MAC that network-boots into a Machine. Anyone
// on the provisioning network can send a DHCP packet or an HTTP request,
// so discovery is bounded three ways, each cheap and local (a refused
// discovery costs no API call):
//
//   - Only boot clients are discovered: a DHCP request from PXE firmware
//     (vendor class PXEClient or a client architecture, option 93) or
//     from iPXE (user class iPXE or option 175); and /boot.ipxe?mac= only
//     from iPXE (its User-Agent), and only for the client's own MAC:
//     where the service sees the client's link (it is on the provisioning
//     interface's subnet), the kernel's neighbour entry for the client's
//     address must be that MAC, and in full DHCP mode the address must be
//     the one this service leased to it. An operating system asking for
//     an address gets one (full mode) but never becomes a Machine.
//   - A rate per source (the client's address for HTTP, its MAC for
//     DHCP) and one for all sources together, so a flood of made-up MACs
//     is slowed to a trickle.
//   - A cap on the machines waiting in phase Discovered (Config.
//     MaxDiscovered): beyond it nothing new is discovered until a person
//     approves or deletes some, or the machines controller collects the
//     stale ones. Hitting it is logged and recorded as a Warning event on
//     the boot service's Host.
const (
	// DefaultMaxDiscovered is the default of Config.MaxDiscovered.
	DefaultMaxDiscovered = 100
	// Discoveries one source may make at once, and how often it gets
	// another.
	sourceBurst    = 4
	sourceInterval = 15 * time.Second
	// Discoveries all sources together may make at once, and how often
	// they get another: a rack powering on is discovered at once, a flood
	// at four machines a second, until the cap.
	globalBurst    = 32
	globalInterval = 250 * time.Millisecond
)

// Why a discovery was refused; the HTTP entry answers each differently.
var (
	errRateLimited = errors.New("too many discoveries from this source or in all: try again later")
	errCapReached  = errors.New("too many machines are waiting in phase Discovered")
)

// isBootClient reports whether a DHCP request comes from network-boot
// firmware or iPXE, rather than an operating system asking for an address.
func isBootClient(req dhcp.Request) bool {
	return req.IsPXE() || req.HasArch || req.IsIPXE
}

// discoveryFacts are what the client said about itself, for the new
// Machine's status and its Discovered event.
type discoveryFacts struct {
	arch, firmware, vendorClass, uuid string
	via                               string // "DHCP" or "HTTP"
}

func factsOf(req dhcp.Request) discoveryFacts {
	arch, fw := firmwareOf(req)
	return discoveryFacts{arch: arch, firmware: fw, vendorClass: req.VendorClass, uuid: req.UUID, via: "DHCP"}
}

// discover returns the Machine for a MAC, creating it (Discovered) the
// first time the MAC network-boots, if source may discover one now and
// the cap allows; errRateLimited or errCapReached say why not.
func (s *Service) discover(ctx context.Context, hw net.HardwareAddr, source string, facts discoveryFacts) (*api.Machine, error) {
	mac := strings.ToLower(hw.String())
	if m := s.machineByMAC(mac); m != nil {
		return m, nil
	}
	name := machineName(mac)
	s.mu.Lock()
	wait, busy := s.creating[name]
	if !busy {
		wait = make(chan struct{})
		s.creating[name] = wait
	}
	s.mu.Unlock()
	if busy {
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if m := s.machine(name); m != nil {
			return m, nil
		}
		return nil, fmt.Errorf("discovering machine %s failed", name)
	}
	defer func() {
		s.mu.Lock()
		delete(s.creating, name)
		s.mu.Unlock()
		close(wait)
	}()
	now := time.Now()
	if !s.sources.allow(source, now) || !s.everyone.allow("", now) {
		s.refused("rate", "discovery rate-limited", "source", source, "mac", mac)
		return nil, errRateLimited
	}
	if n, limit := s.waitingDiscovered(), s.cfg.MaxDiscovered; limit > 0 && n >= limit {
		s.capReached(n, mac)
		return nil, errCapReached
	}
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.MachineSpec{MAC: mac, Architecture: facts.arch, Site: s.cfg.Site}}
	out, err := s.c.Create(ctx, m)
	if api.IsAlreadyExists(err) {
		o, gerr := s.c.Get(ctx, "Machine", "", name)
		if gerr != nil {
			return nil, gerr
		}
		s.remember(o.(*api.Machine))
		return o.(*api.Machine), nil
	}
	if err != nil {
		return nil, err
	}
	s.remember(out.(*api.Machine))
	seen := now.UTC()
	st := api.MachineFacts{LastSeen: &seen}
	if facts.via == "DHCP" {
		st.VendorClass, st.UUID, st.Firmware = facts.vendorClass, facts.uuid, facts.firmware
	}
	if _, err := s.c.PatchStatus(ctx, "Machine", "", name, st); err != nil {
		slog.Warn("writing a discovered machine's status", "machine", name, "err", err)
	}
	if facts.via == "DHCP" {
		s.rec.Eventf(ctx, out, api.EventNormal, "Discovered", "network-booted for the first time (MAC %s, %s %s, vendor class %q)", mac, facts.arch, facts.firmware, facts.vendorClass)
	} else {
		s.rec.Eventf(ctx, out, api.EventNormal, "Discovered", "network-booted for the first time (MAC %s, iPXE from %s)", mac, strings.TrimPrefix(source, "addr:"))
	}
	return out.(*api.Machine), nil
}

// remember keeps a machine this service just created (or found) until its
// informer has it, so that the machine's next request a moment later
// finds it without asking the API.
func (s *Service) remember(m *api.Machine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, cached := s.machines.Get(m.Metadata.Name); !cached {
		s.fresh[m.Metadata.Name] = m
	}
}

// waitingDiscovered counts the machines waiting in phase Discovered (or
// not yet given a phase), with those being created.
func (s *Service) waitingDiscovered() int {
	n := 0
	for _, o := range s.machines.List() {
		m := o.(*api.Machine)
		if m.Metadata.DeletionTimestamp == nil && (m.Status.Phase == "" || m.Status.Phase == api.MachineDiscovered) {
			n++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.fresh {
		if _, cached := s.machines.Get(name); !cached {
			n++
		}
	}
	return n + len(s.creating) - 1 // not counting the caller's own
}

// capReached logs and records that the cap stopped a discovery, at most
// once a minute, saying how many were refused since.
func (s *Service) capReached(n int, mac string) {
	s.mu.Lock()
	s.capRefused++
	refused := s.capRefused
	report := time.Since(s.capReported) >= time.Minute
	if report {
		s.capReported, s.capRefused = time.Now(), 0
	}
	s.mu.Unlock()
	if !report {
		return
	}
	msg := fmt.Sprintf("%d machines are waiting in phase Discovered, the most this boot service discovers (--max-discovered %d): not discovering new MACs (%d refused, the last %s); approve or delete waiting machines, or raise --max-discovered",
		n, s.cfg.MaxDiscovered, refused, mac)
	slog.Warn(msg)
	// A boot service is no Host and records events only about Machines:
	// the warning goes on the machine that has waited longest, where a
	// person deciding which waiting machines to approve or delete looks.
	if m := s.longestWaiting(); m != nil {
		s.rec.Eventf(context.Background(), m, api.EventWarning, "DiscoveryCapReached", "%s", msg)
	}
}

// longestWaiting is the cached machine that has waited longest in phase
// Discovered (the oldest; by name among equals), or nil.
func (s *Service) longestWaiting() *api.Machine {
	var oldest *api.Machine
	for _, o := range s.machines.List() {
		m := o.(*api.Machine)
		if m.Metadata.DeletionTimestamp != nil || (m.Status.Phase != "" && m.Status.Phase != api.MachineDiscovered) ||
			m.Metadata.CreationTimestamp == nil {
			continue
		}
		if oldest == nil || m.Metadata.CreationTimestamp.Before(*oldest.Metadata.CreationTimestamp) ||
			(m.Metadata.CreationTimestamp.Equal(*oldest.Metadata.CreationTimestamp) && m.Metadata.Name < oldest.Metadata.Name) {
			oldest = m
		}
	}
	return oldest
}

// refused logs a refusal of kind at most once a minute, with a count.
func (s *Service) refused(kind, msg string, args ...any) {
	s.mu.Lock()
	c := s.refusals[kind]
	c.n++
	n := c.n
	report := time.Since(c.at) >= time.Minute
	if report {
		c.at, c.n = time.Now(), 0
	}
	s.refusals[kind] = c
	s.mu.Unlock()
	if report {
		slog.Warn(msg, append(args, "refused since last logged", n)...)
	}
}

type refusalCount struct {
	n  int
	at time.Time
}

// limiter is a token bucket per key: each key may do burst things at
// once and gets another every interval. It remembers at most maxKeys
// keys; past that it forgets those whose buckets are full again, then,
// if it must, everything (a flood of keys then gets a fresh burst each,
// which the global key still bounds).
type limiter struct {
	burst    float64
	interval time.Duration
	maxKeys  int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(burst int, interval time.Duration) *limiter {
	return &limiter{burst: float64(burst), interval: interval, maxKeys: 4096, buckets: map[string]*bucket{}}
}

// allow takes a token of key's bucket if there is one.
func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.interval))
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *limiter) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.at))/float64(l.interval) >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxKeys {
		clear(l.buckets)
	}
}
