package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"
)

// hwKey is a hardware address usable as a map key without allocating.
type hwKey struct {
	n uint8
	b [16]byte
}

func keyOf(mac []byte) hwKey {
	var k hwKey
	k.n = uint8(copy(k.b[:], mac))
	return k
}

func (k hwKey) mac() net.HardwareAddr { return net.HardwareAddr(append([]byte(nil), k.b[:k.n]...)) }

type leaseState uint8

const (
	// offered: held for a client between OFFER and REQUEST; not persisted.
	offered leaseState = iota
	// bound: acknowledged; persisted.
	bound
	// declined: a client reported the address in use by someone else
	// (DECLINE); kept out of the pool for a while, owned by no one.
	declined
)

type lease struct {
	hw       hwKey
	ip       uint32
	state    leaseState
	reserved bool  // the handler chose the address
	expires  int64 // unix nanoseconds
	hostname string
}

// Lease is a binding as Leases reports it.
type Lease struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Expires  time.Time
	Hostname string
	// Reserved is true when the Handler chose the address rather than
	// the pool.
	Reserved bool
}

// leaseTable maps clients to addresses. Every operation is O(1) apart from
// a sweep for expired leases, which runs only when the pool has no
// address left that was never handed out or was freed, at most once per
// earliest expiry, and pays for itself with every address it frees.
//
// Its lock is never held across I/O: persistence reads the dirty set
// under the lock and writes after releasing it.
type leaseTable struct {
	subnet     netip.Prefix
	mask, net  uint32
	poolStart  uint32
	poolEnd    uint32
	hasPool    bool
	excluded   [2]uint32 // the server's and the router's addresses
	offerHold  time.Duration
	leaseTime  time.Duration
	declineFor time.Duration

	mu        sync.Mutex
	byHW      map[hwKey]*lease
	byIP      map[uint32]*lease
	next      uint32 // next address of the pool never handed out
	cursorEnd bool   // every address of the pool has been handed out once
	free      []uint32
	freeHead  int
	nextSweep int64
	// dirty holds addresses whose persisted state may be stale; nil when
	// leases are not persisted. notify tells the lease file's writer.
	dirty  map[uint32]struct{}
	notify chan struct{}
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func newLeaseTable(cfg *Config, persist bool) *leaseTable {
	t := &leaseTable{
		subnet:     cfg.Subnet.Masked(),
		offerHold:  offerHold,
		leaseTime:  cfg.LeaseTime,
		declineFor: declineHold,
		byHW:       make(map[hwKey]*lease),
		byIP:       make(map[uint32]*lease),
	}
	if t.subnet.IsValid() {
		t.mask = ^uint32(0) << (32 - t.subnet.Bits())
		if t.subnet.Bits() == 0 {
			t.mask = 0
		}
		t.net = u32(t.subnet.Addr())
	}
	if cfg.PoolStart.IsValid() {
		t.hasPool = true
		t.poolStart, t.poolEnd = u32(cfg.PoolStart), u32(cfg.PoolEnd)
		t.next = t.poolStart
	}
	if cfg.ServerIP.Is4() {
		t.excluded[0] = u32(cfg.ServerIP)
	}
	if cfg.Router.Is4() {
		t.excluded[1] = u32(cfg.Router)
	}
	if persist {
		t.dirty = make(map[uint32]struct{})
	}
	return t
}

// inSubnet reports whether ip is a host address of the subnet.
func (t *leaseTable) inSubnet(ip uint32) bool {
	if ip&t.mask != t.net {
		return false
	}
	host := ip &^ t.mask
	return t.mask == ^uint32(0) || (host != 0 && host != ^t.mask)
}

func (t *leaseTable) usable(ip uint32) bool {
	return ip != 0 && ip != t.excluded[0] && ip != t.excluded[1] && t.inSubnet(ip)
}

func (t *leaseTable) inPool(ip uint32) bool {
	return t.hasPool && ip >= t.poolStart && ip <= t.poolEnd && t.usable(ip)
}

func (t *leaseTable) markLocked(ip uint32) {
	if t.dirty == nil {
		return
	}
	t.dirty[ip] = struct{}{}
	select {
	case t.notify <- struct{}{}:
	default: // the writer has been told already
	}
}

// boundCount is about how many bindings the lease file holds (offers and
// declined addresses count too), to know when to rewrite it.
func (t *leaseTable) boundCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byIP)
}

// removeLocked forgets l and, when its address belongs to the pool, queues
// the address for reuse.
func (t *leaseTable) removeLocked(l *lease) {
	if t.byHW[l.hw] == l {
		delete(t.byHW, l.hw)
	}
	if t.byIP[l.ip] == l {
		delete(t.byIP, l.ip)
		if l.state == bound {
			t.markLocked(l.ip)
		}
		if t.inPool(l.ip) {
			t.free = append(t.free, l.ip)
		}
	}
}

// allocLocked returns a free pool address: a freed one first, then one
// never handed out, then one whose lease expired.
func (t *leaseTable) allocLocked(now int64) (uint32, bool) {
	if !t.hasPool {
		return 0, false
	}
	for {
		if t.freeHead < len(t.free) {
			ip := t.free[t.freeHead]
			t.freeHead++
			if t.freeHead > 1024 && t.freeHead > len(t.free)/2 {
				t.free = append(t.free[:0], t.free[t.freeHead:]...)
				t.freeHead = 0
			}
			if t.byIP[ip] == nil && t.inPool(ip) {
				return ip, true
			}
			continue
		}
		if !t.cursorEnd {
			ip := t.next
			if ip >= t.poolEnd {
				t.cursorEnd = true
			} else {
				t.next++
			}
			if t.byIP[ip] == nil && t.usable(ip) {
				return ip, true
			}
			continue
		}
		if !t.sweepLocked(now) {
			return 0, false
		}
	}
}

// sweepLocked frees every expired lease; it reports whether it freed any.
func (t *leaseTable) sweepLocked(now int64) bool {
	if now < t.nextSweep {
		return false
	}
	freed := false
	t.nextSweep = 1<<63 - 1
	for _, l := range t.byIP {
		if l.expires <= now {
			t.removeLocked(l)
			freed = true
		} else if l.expires < t.nextSweep {
			t.nextSweep = l.expires
		}
	}
	return freed
}

// extendLocked moves the deadline of a lease later, never earlier: a
// client that sends DISCOVER while bound keeps its binding.
func (t *leaseTable) extendLocked(l *lease, until int64) {
	if until > l.expires {
		l.expires = until
	}
	if l.expires < t.nextSweep {
		t.nextSweep = l.expires
	}
}

// offer picks the address to offer hw: its reservation, else the address
// it holds (even expired, if no one took it since), else the one it asks
// for when free, else one from the pool. ok is false when the pool is
// exhausted.
func (t *leaseTable) offer(hw hwKey, reserved, requested netip.Addr, hostname string, now time.Time) (netip.Addr, bool) {
	n := now.UnixNano()
	hold := n + int64(t.offerHold)
	t.mu.Lock()
	defer t.mu.Unlock()
	if reserved.IsValid() {
		l := t.reserveLocked(hw, u32(reserved), hostname)
		if l.state != bound || l.expires < n {
			l.state = offered
			t.extendLocked(l, hold)
		}
		return reserved, true
	}
	if l := t.byHW[hw]; l != nil {
		if l.state != declined && (t.inPool(l.ip) || !l.reserved) && t.usable(l.ip) {
			if l.state != bound || l.expires < n {
				l.state = offered
			}
			l.reserved = false
			t.extendLocked(l, hold)
			return addrOf(l.ip), true
		}
		t.removeLocked(l)
	}
	var ip uint32
	if requested.Is4() && t.inPool(u32(requested)) && t.byIP[u32(requested)] == nil {
		ip = u32(requested)
	} else {
		var ok bool
		if ip, ok = t.allocLocked(n); !ok {
			return netip.Addr{}, false
		}
	}
	l := &lease{hw: hw, ip: ip, state: offered, hostname: hostname}
	t.byHW[hw], t.byIP[ip] = l, l
	t.extendLocked(l, hold)
	return addrOf(ip), true
}

// reserveLocked binds hw to ip, taking the address from whoever holds it
// and dropping hw's other lease: reservations win over the pool.
func (t *leaseTable) reserveLocked(hw hwKey, ip uint32, hostname string) *lease {
	if l := t.byIP[ip]; l != nil && l.hw != hw {
		t.removeLocked(l)
	}
	l := t.byHW[hw]
	if l != nil && l.ip != ip {
		t.removeLocked(l)
		l = nil
	}
	if l == nil {
		l = &lease{hw: hw, ip: ip, state: offered}
		t.byHW[hw], t.byIP[ip] = l, l
	}
	l.reserved = true
	if hostname != "" {
		l.hostname = hostname
	}
	return l
}

// ack binds hw to want, the address its REQUEST asks for, and returns the
// binding's expiry; when it may not have it, nak says why.
//
// selecting is true when the client names this server (option 54): it is
// answering an OFFER. Otherwise it is rebooting or renewing, and Hearth is
// authoritative for its subnet: an address that is free in the pool is
// given to the client that asks for it (a server that lost its leases
// keeps its clients on their addresses); anything else is refused.
func (t *leaseTable) ack(hw hwKey, want, reserved netip.Addr, hostname string, now time.Time) (expires time.Time, nak string) {
	n := now.UnixNano()
	until := now.Add(t.leaseTime)
	if !want.Is4() || want.IsUnspecified() {
		return time.Time{}, "no requested address"
	}
	w := u32(want)
	t.mu.Lock()
	defer t.mu.Unlock()
	if reserved.IsValid() {
		if reserved != want {
			return time.Time{}, "address " + reserved.String() + " is reserved for this client"
		}
		l := t.reserveLocked(hw, w, hostname)
		t.bindLocked(l, until.UnixNano())
		return until, ""
	}
	if !t.usable(w) {
		return time.Time{}, "address " + want.String() + " is not in subnet " + t.subnet.String()
	}
	if l := t.byHW[hw]; l != nil {
		mine := l.ip == w && l.state != declined
		if mine && (!l.reserved || t.inPool(w)) {
			l.reserved = false
			if hostname != "" {
				l.hostname = hostname
			}
			t.bindLocked(l, until.UnixNano())
			return until, ""
		}
		// A withdrawn reservation outside the pool, an offer the client
		// no longer wants, or a lease that ran out: forget it.
		if mine || l.state == offered || l.expires <= n {
			t.removeLocked(l)
		} else {
			return time.Time{}, "client holds " + addrOf(l.ip).String() + ", not " + want.String()
		}
	}
	if other := t.byIP[w]; other != nil {
		if other.expires > n || other.reserved {
			return time.Time{}, "address " + want.String() + " is in use"
		}
		t.removeLocked(other)
	}
	if !t.inPool(w) {
		return time.Time{}, "address " + want.String() + " is outside the pool and not reserved"
	}
	l := &lease{hw: hw, ip: w, hostname: hostname}
	t.byHW[hw], t.byIP[w] = l, l
	t.bindLocked(l, until.UnixNano())
	return until, ""
}

func (t *leaseTable) bindLocked(l *lease, until int64) {
	l.state = bound
	l.expires = until
	t.extendLocked(l, until)
	t.markLocked(l.ip)
}

// release frees hw's lease on ip (RELEASE); it reports whether there was
// one.
func (t *leaseTable) release(hw hwKey, ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byHW[hw]
	if l == nil || !ip.Is4() || l.ip != u32(ip) {
		return false
	}
	t.removeLocked(l)
	return true
}

// cancelOffer drops the address offered to hw: it took another server's
// offer.
func (t *leaseTable) cancelOffer(hw hwKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.byHW[hw]; l != nil && l.state == offered {
		t.removeLocked(l)
	}
}

// decline takes ip from hw and keeps it out of the pool for a while:
// something else on the link answers ARP for it.
func (t *leaseTable) decline(hw hwKey, ip netip.Addr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byHW[hw]
	if l == nil || !ip.Is4() || l.ip != u32(ip) {
		return false
	}
	delete(t.byHW, hw)
	if l.state == bound {
		t.markLocked(l.ip)
	}
	l.hw = hwKey{}
	l.state = declined
	l.reserved = false
	l.expires = 0
	t.extendLocked(l, now.Add(t.declineFor).UnixNano())
	return true
}

// restore puts a persisted binding back; it reports whether it was
// accepted (the address still belongs to the subnet and is unclaimed).
func (t *leaseTable) restore(hw hwKey, ip netip.Addr, expires time.Time, hostname string, reserved bool) bool {
	if !ip.Is4() || hw.n == 0 {
		return false
	}
	v := u32(ip)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.usable(v) || (!reserved && !t.inPool(v)) {
		return false
	}
	if old := t.byIP[v]; old != nil {
		t.removeLocked(old)
	}
	if old := t.byHW[hw]; old != nil {
		t.removeLocked(old)
	}
	l := &lease{hw: hw, ip: v, state: bound, reserved: reserved, hostname: hostname}
	t.byHW[hw], t.byIP[v] = l, l
	t.extendLocked(l, expires.UnixNano())
	return true
}

// snapshot returns the bindings that have not expired.
func (t *leaseTable) snapshot(now time.Time) []Lease {
	n := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Lease, 0, len(t.byHW))
	for _, l := range t.byHW {
		if l.state == bound && l.expires > n {
			out = append(out, l.export())
		}
	}
	return out
}

// bound returns hw's binding if it has one that has not expired.
func (t *leaseTable) bound(hw hwKey, now time.Time) (Lease, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.byHW[hw]
	if l == nil || l.state != bound || l.expires <= now.UnixNano() {
		return Lease{}, false
	}
	return l.export(), true
}

func (l *lease) export() Lease {
	return Lease{MAC: l.hw.mac(), IP: addrOf(l.ip), Expires: time.Unix(0, l.expires), Hostname: l.hostname, Reserved: l.reserved}
}

// leaseRecord is the persisted state of one address: bound to a client,
// or free (MAC empty).
type leaseRecord struct {
	IP       string `json:"ip"`
	MAC      string `json:"mac,omitempty"`
	Expires  int64  `json:"expires,omitempty"` // unix seconds
	Hostname string `json:"hostname,omitempty"`
	Reserved bool   `json:"reserved,omitempty"`
}

// takeDirty returns the current state of every address changed since the
// last call, for the lease file.
func (t *leaseTable) takeDirty() []leaseRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.dirty) == 0 {
		return nil
	}
	recs := make([]leaseRecord, 0, len(t.dirty))
	for ip := range t.dirty {
		recs = append(recs, t.recordLocked(ip))
		delete(t.dirty, ip)
	}
	return recs
}

func (t *leaseTable) recordLocked(ip uint32) leaseRecord {
	r := leaseRecord{IP: addrOf(ip).String()}
	if l := t.byIP[ip]; l != nil && l.state == bound {
		r.MAC = l.hw.mac().String()
		r.Expires = time.Unix(0, l.expires).Unix()
		r.Hostname = l.hostname
		r.Reserved = l.reserved
	}
	return r
}

// allRecords returns every binding, for rewriting the lease file.
func (t *leaseTable) allRecords() []leaseRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.dirty)
	recs := make([]leaseRecord, 0, len(t.byIP))
	for ip, l := range t.byIP {
		if l.state == bound {
			recs = append(recs, t.recordLocked(ip))
		}
	}
	return recs
}
