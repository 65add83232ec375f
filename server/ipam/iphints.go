package ipam

import (
	"math/bits"
	"net/netip"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// ipHints remembers, per subnet, which addresses of its DHCP range are
// held, so that giving a NIC the lowest free address costs a lookup in a
// bitmap and one point read, not a read of every allocation key of the
// subnet (which made a VM create cost O(VMs on the subnet): nearly half
// of the server's CPU in `hearth bench scale`).
//
// They are hints, never the arbiter: an address they call free is read
// (its key) before it is picked, and the allocation's transaction still
// compares that its key does not exist, so a stale hint costs a retry at
// worst, never a shared address. They learn from those reads, from this
// server's allocations and releases, and from a full read of the
// subnet's keys when they are first needed, when a write is retried
// (store.Attempt > 0: another writer raced this one) and when they are
// older than ipHintsTTL (another server of an HA control plane frees
// addresses this one does not see).
type ipHints struct {
	mu      sync.Mutex
	subnets map[string]*subnetHints // by subnet uid
	now     func() time.Time
	// decoded are the subnets creates read, decoded once per stored
	// revision (subnetcache.go).
	decoded subnetCache
}

type subnetHints struct {
	first netip.Addr // index 0
	size  int
	held  []uint64 // bit i: first+i is held (or reserved)
	low   int      // no clear bit below it
	built time.Time
	// pending are addresses picked a moment ago by writes that may not
	// have committed yet: writes racing on one subnet each get another
	// address instead of colliding and retrying. One that did not commit
	// (it failed, or was a dry run) is free again after ipHintsPending.
	pending map[int]time.Time
}

// ipHintsTTL is how long hints live before the next allocation in the
// subnet reads its keys again.
const ipHintsTTL = time.Minute

// ipHintsMaxRange bounds the ranges kept as a bitmap (128 KiB); larger
// ones, and IPv6 ones, are searched as before.
const ipHintsMaxRange = 1 << 20

// ipHintsPending is how long a picked address is kept from other writes
// before the hints believe only their reads about it.
const ipHintsPending = 2 * time.Second

// ipHintsVerify bounds the point reads one pick makes before it falls
// back to reading the subnet's keys.
const ipHintsVerify = 16

func newIPHints() *ipHints {
	return &ipHints{subnets: map[string]*subnetHints{}, now: time.Now}
}

// usable reports whether a range is kept as a bitmap.
func hintable(first, last netip.Addr) bool {
	return first.Is4() && api.RangeSize(first, last) <= ipHintsMaxRange
}

// get returns the hints of a subnet for the range first-last, or nil if
// there are none (or they are stale, or for another range).
func (h *ipHints) getLocked(uid string, first, last netip.Addr) *subnetHints {
	s := h.subnets[uid]
	if s == nil || s.first != first || s.size != api.RangeSize(first, last) || h.now().Sub(s.built) > ipHintsTTL {
		return nil
	}
	return s
}

// build sets a subnet's hints from a full read of its keys.
func (h *ipHints) build(uid string, first, last netip.Addr, held map[string]bool) {
	if h == nil || !hintable(first, last) {
		return
	}
	s := &subnetHints{first: first, size: api.RangeSize(first, last), built: h.now(), pending: map[int]time.Time{}}
	s.held = make([]uint64, (s.size+63)/64)
	for a := range held {
		if ip, err := netip.ParseAddr(a); err == nil {
			s.set(ip, true)
		}
	}
	h.mu.Lock()
	h.subnets[uid] = s
	h.mu.Unlock()
}

func (s *subnetHints) index(a netip.Addr) (int, bool) {
	if !a.Is4() || a.Less(s.first) {
		return 0, false
	}
	f, b := s.first.As4(), a.As4()
	d := int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3])) -
		int(uint32(f[0])<<24|uint32(f[1])<<16|uint32(f[2])<<8|uint32(f[3]))
	return d, d >= 0 && d < s.size
}

func (s *subnetHints) addr(i int) netip.Addr {
	f := s.first.As4()
	v := uint32(f[0])<<24 | uint32(f[1])<<16 | uint32(f[2])<<8 | uint32(f[3]) + uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (s *subnetHints) set(a netip.Addr, held bool) {
	i, ok := s.index(a)
	if !ok {
		return
	}
	delete(s.pending, i)
	if held {
		s.held[i/64] |= 1 << (i % 64)
		return
	}
	s.held[i/64] &^= 1 << (i % 64)
	if i < s.low {
		s.low = i
	}
}

// nextClear is the lowest index from i whose bit is clear, or size.
func (s *subnetHints) nextClear(i int) int {
	for i < s.size {
		w := ^s.held[i/64] >> (i % 64)
		if w != 0 {
			return min(i+bits.TrailingZeros64(w), s.size)
		}
		i = (i/64 + 1) * 64
	}
	return s.size
}

// mark records that a is held (true) or was let go (false) in a subnet
// with hints; nothing for one without.
func (h *ipHints) mark(uid string, a netip.Addr, held bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.subnets[uid]; s != nil {
		s.set(a, held)
	}
}

// forget drops a subnet's hints (it is deleted).
func (h *ipHints) forget(uid string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subnets, uid)
}

// pick finds the lowest address from first to last that the hints call
// free, that skip does not refuse, and whose key isHeld reads as not
// held (addresses read as held are remembered); with spread > 0, it
// passes over that many such candidates first, unread, so that writes
// retrying a lost race do not all try the same address again. ok is
// false when the hints cannot answer: none (or stale ones) for this
// subnet, a range too large, too many hints found wrong, or fewer free
// candidates than spread; the caller then reads the subnet's keys.
// found is false when the hints say nothing is free.
func (h *ipHints) pick(uid string, first, last netip.Addr, spread int, skip func(netip.Addr) bool, isHeld func(netip.Addr) (bool, error)) (a netip.Addr, found, ok bool, err error) {
	if h == nil || !hintable(first, last) {
		return a, false, false, nil
	}
	h.mu.Lock()
	s := h.getLocked(uid, first, last)
	if s == nil {
		h.mu.Unlock()
		return a, false, false, nil
	}
	i := s.nextClear(s.low)
	s.low = i
	verified := 0
	now := h.now()
	for ; i < s.size; i = s.nextClear(i + 1) {
		a = s.addr(i)
		if at, ok := s.pending[i]; ok {
			if now.Sub(at) < ipHintsPending {
				continue
			}
			delete(s.pending, i)
		}
		if skip(a) {
			continue
		}
		if spread > 0 {
			spread--
			continue
		}
		if verified == ipHintsVerify {
			h.mu.Unlock()
			return a, false, false, nil
		}
		verified++
		// Read without the lock: other writes go on meanwhile (kept
		// off this address by its pending mark), and the transaction
		// is the arbiter anyway.
		s.pending[i] = now
		h.mu.Unlock()
		held, err := isHeld(a)
		if err != nil {
			return a, false, false, err
		}
		h.mu.Lock()
		if h.subnets[uid] != s {
			h.mu.Unlock()
			return a, false, false, nil // rebuilt meanwhile
		}
		if !held {
			h.mu.Unlock()
			return a, true, true, nil
		}
		s.set(a, true) // and no longer pending
	}
	h.mu.Unlock()
	// Nothing free by the hints: a full read says for sure.
	return netip.Addr{}, false, false, nil
}
