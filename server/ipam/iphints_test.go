package ipam

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestIPHints: the hints give the lowest address they believe free and
// a read confirms, learn from reads that say otherwise, keep a picked
// address from racing writes for a moment, take back released ones, and
// give up (the caller reads every key) when they are stale, for IPv6, or
// when they are wrong too often.
func TestIPHints(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	h := newIPHints()
	h.now = func() time.Time { return now }
	ip := netip.MustParseAddr
	first, last := ip("10.0.0.1"), ip("10.0.0.254")
	gateway := ip("10.0.0.1")
	skip := func(a netip.Addr) bool { return a == gateway }
	held := map[netip.Addr]bool{} // what etcd holds
	var reads []netip.Addr
	isHeld := func(a netip.Addr) (bool, error) { reads = append(reads, a); return held[a], nil }
	pick := func(want string, wantOK bool) {
		t.Helper()
		reads = nil
		a, found, ok, err := h.pick("sn", first, last, 0, skip, isHeld)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ok != wantOK:
			t.Fatalf("pick: ok %v, want %v (reads %v)", ok, wantOK, reads)
		case ok && (!found || a.String() != want):
			t.Fatalf("pick: %s (found %v), want %s (reads %v)", a, found, want, reads)
		}
		if ok {
			held[a] = true // it commits
		}
	}

	pick("", false) // no hints yet
	held[ip("10.0.0.2")], held[ip("10.0.0.3")] = true, true
	h.build("sn", first, last, map[string]bool{"10.0.0.2": true, "10.0.0.3": true})
	pick("10.0.0.4", true)
	if len(reads) != 1 {
		t.Errorf("the pick read %v, want the one address it picked", reads)
	}
	pick("10.0.0.5", true) // .4 is pending: a racing write gets another
	held[ip("10.0.0.6")] = true
	pick("10.0.0.7", true) // .6 was taken elsewhere: read, learnt, skipped
	now = now.Add(3 * time.Second)
	pick("10.0.0.8", true) // .4-.7 read as held once their pending is over
	h.mark("sn", ip("10.0.0.3"), false)
	delete(held, ip("10.0.0.3"))
	pick("10.0.0.3", true)              // a release lowers the lowest free
	h.mark("sn", ip("10.0.0.4"), false) // a release that did not commit
	now = now.Add(3 * time.Second)
	pick("10.0.0.9", true) // .4 is read as held: not picked
	if !slices.Contains(reads, ip("10.0.0.4")) {
		t.Errorf("reads %v, want .4 read", reads)
	}
	for i := 10; i < 40; i++ {
		held[netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})] = true // another server's
	}
	pick("", false) // wrong too often: read the keys
	h.build("sn", first, last, map[string]bool{})
	now = now.Add(2 * ipHintsTTL)
	pick("", false) // stale

	v6 := newIPHints()
	v6.build("sn6", ip("2001:db8::1"), ip("2001:db8::ff"), nil)
	if _, _, ok, _ := v6.pick("sn6", ip("2001:db8::1"), ip("2001:db8::ff"), 0, skip, isHeld); ok {
		t.Error("IPv6 hints answered; want the caller to search")
	}
	var none *ipHints
	if _, _, ok, _ := none.pick("sn", first, last, 0, skip, isHeld); ok {
		t.Error("nil hints answered")
	}
	none.mark("sn", first, true)
	none.forget("sn")
}

// TestIPHintsSpread: a retry's pick passes over that many free
// candidates, unread, and gives up (the caller reads every key) when
// the hints have fewer.
func TestIPHintsSpread(t *testing.T) {
	h := newIPHints()
	ip := netip.MustParseAddr
	first, last := ip("10.0.0.1"), ip("10.0.0.10")
	h.build("sn", first, last, map[string]bool{"10.0.0.1": true, "10.0.0.3": true})
	var reads []netip.Addr
	isHeld := func(a netip.Addr) (bool, error) { reads = append(reads, a); return false, nil }
	never := func(netip.Addr) bool { return false }
	reads = nil
	a, found, ok, err := h.pick("sn", first, last, 0, never, isHeld)
	if err != nil || !ok || !found || a != ip("10.0.0.2") {
		t.Fatalf("spread 0: %s %v %v %v, want 10.0.0.2", a, found, ok, err)
	}
	// .2 is pending: the free candidates are .4 .5 .6 .7 .8 .9 .10.
	reads = nil
	a, found, ok, err = h.pick("sn", first, last, 2, never, isHeld)
	if err != nil || !ok || !found || a != ip("10.0.0.6") {
		t.Fatalf("spread 2: %s %v %v %v, want 10.0.0.6 (.4 and .5 passed over)", a, found, ok, err)
	}
	if !slices.Equal(reads, []netip.Addr{ip("10.0.0.6")}) {
		t.Errorf("spread 2 read %v, want only the address it picked", reads)
	}
	// .2 and .6 pending: six candidates left (.4 .5 .7 .8 .9 .10).
	if _, _, ok, _ := h.pick("sn", first, last, 6, never, isHeld); ok {
		t.Error("spread past every free candidate answered; want the caller to read the keys")
	}
}
