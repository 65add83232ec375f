package dhcp

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func hw(n byte) hwKey { return keyOf([]byte{2, 0, 0, 0, 0, n}) }

func testTable(poolStart, poolEnd string) *leaseTable {
	cfg := Config{
		ServerIP: ip("10.0.0.1"), Router: ip("10.0.0.1"),
		Subnet:    netip.MustParsePrefix("10.0.0.0/24"),
		PoolStart: ip(poolStart), PoolEnd: ip(poolEnd), LeaseTime: time.Hour,
	}
	return newLeaseTable(&cfg, false)
}

func offerAck(t *testing.T, lt *leaseTable, h hwKey, now time.Time) netip.Addr {
	t.Helper()
	a, ok := lt.offer(h, netip.Addr{}, netip.Addr{}, "", now)
	if !ok {
		t.Fatalf("no offer for %v", h.mac())
	}
	if _, nak := lt.ack(h, a, netip.Addr{}, "", now); nak != "" {
		t.Fatalf("ack %v for %v: %s", a, h.mac(), nak)
	}
	return a
}

func TestPoolHandsOutEachAddressOnceAndSkipsServer(t *testing.T) {
	lt := testTable("10.0.0.1", "10.0.0.4") // .1 is the server and router
	seen := map[netip.Addr]bool{}
	for i := range byte(3) {
		a := offerAck(t, lt, hw(i), t0)
		if seen[a] || a == ip("10.0.0.1") {
			t.Fatalf("address %v handed out twice or is the server's", a)
		}
		seen[a] = true
	}
	if a, ok := lt.offer(hw(9), netip.Addr{}, netip.Addr{}, "", t0); ok {
		t.Fatalf("pool of 3 gave a 4th address %v", a)
	}
	// The same client asking again gets its address back.
	if a := offerAck(t, lt, hw(1), t0); a != ip("10.0.0.3") {
		t.Errorf("client 1 again: got %v, want 10.0.0.3", a)
	}
}

func TestExpiredLeaseIsReclaimedButStickyUntilThen(t *testing.T) {
	lt := testTable("10.0.0.10", "10.0.0.10")
	a := offerAck(t, lt, hw(1), t0)
	later := t0.Add(2 * time.Hour)
	// Expired but not taken: the same client gets it back.
	if b := offerAck(t, lt, hw(1), later); b != a {
		t.Fatalf("returning client got %v, want its old %v", b, a)
	}
	// Expired again: another client gets it.
	if b := offerAck(t, lt, hw(2), later.Add(2*time.Hour)); b != a {
		t.Fatalf("new client got %v, want reclaimed %v", b, a)
	}
	if _, nak := lt.ack(hw(1), a, netip.Addr{}, "", later.Add(2*time.Hour)); nak == "" {
		t.Error("old client renewing a reclaimed address was acknowledged")
	}
}

func TestOfferHeldThenFreed(t *testing.T) {
	lt := testTable("10.0.0.10", "10.0.0.10")
	if _, ok := lt.offer(hw(1), netip.Addr{}, netip.Addr{}, "", t0); !ok {
		t.Fatal("no offer")
	}
	if _, ok := lt.offer(hw(2), netip.Addr{}, netip.Addr{}, "", t0.Add(time.Second)); ok {
		t.Fatal("offered address given to a second client while held")
	}
	if _, ok := lt.offer(hw(2), netip.Addr{}, netip.Addr{}, "", t0.Add(offerHold+time.Second)); !ok {
		t.Fatal("offer not freed after the hold")
	}
}

func TestReleaseDeclineCancel(t *testing.T) {
	lt := testTable("10.0.0.10", "10.0.0.11")
	a := offerAck(t, lt, hw(1), t0)
	if lt.release(hw(2), a) {
		t.Error("another client released client 1's lease")
	}
	if !lt.release(hw(1), a) || len(lt.snapshot(t0)) != 0 {
		t.Fatal("release did not free the lease")
	}
	b := offerAck(t, lt, hw(2), t0)
	if !lt.decline(hw(2), b, t0) {
		t.Fatal("decline refused")
	}
	// b is out of the pool for a while, so client 3 is offered a.
	if c, _ := lt.offer(hw(3), netip.Addr{}, netip.Addr{}, "", t0); c == b {
		t.Errorf("declined address %v offered again at once", b)
	}
	lt.cancelOffer(hw(3))
	if _, ok := lt.offer(hw(4), netip.Addr{}, netip.Addr{}, "", t0); !ok {
		t.Error("cancelled offer not freed")
	}
}

func TestReservationWins(t *testing.T) {
	lt := testTable("10.0.0.10", "10.0.0.20")
	dyn := offerAck(t, lt, hw(1), t0) // .10
	// Client 2 is reserved the address client 1 holds.
	got, ok := lt.offer(hw(2), dyn, netip.Addr{}, "node2", t0)
	if !ok || got != dyn {
		t.Fatalf("reservation: got %v, want %v", got, dyn)
	}
	if _, nak := lt.ack(hw(2), dyn, dyn, "", t0); nak != "" {
		t.Fatal(nak)
	}
	if _, nak := lt.ack(hw(1), dyn, netip.Addr{}, "", t0); nak == "" {
		t.Error("client 1 kept an address reserved for client 2")
	}
	// A reservation outside the pool; asking for anything else is refused.
	if _, nak := lt.ack(hw(3), ip("10.0.0.99"), ip("10.0.0.5"), "", t0); nak == "" {
		t.Error("client with a reservation acknowledged on another address")
	}
	if _, nak := lt.ack(hw(3), ip("10.0.0.5"), ip("10.0.0.5"), "", t0); nak != "" {
		t.Error(nak)
	}
	for _, l := range lt.snapshot(t0) {
		if l.IP == dyn && (l.MAC.String() != hw(2).mac().String() || !l.Reserved || l.Hostname != "node2") {
			t.Errorf("lease on %v: %+v", dyn, l)
		}
	}
}

func TestRebootingClientKeepsFreeAddress(t *testing.T) {
	lt := testTable("10.0.0.10", "10.0.0.20")
	// A server that lost its leases: the client asks for its old address.
	if _, nak := lt.ack(hw(1), ip("10.0.0.15"), netip.Addr{}, "", t0); nak != "" {
		t.Errorf("free pool address refused: %s", nak)
	}
	for _, want := range []string{"10.0.0.15", "10.0.1.5", "10.0.0.5", "10.0.0.1"} {
		if _, nak := lt.ack(hw(2), ip(want), netip.Addr{}, "", t0); nak == "" {
			t.Errorf("client 2 got %s", want)
		}
	}
}

func TestLeaseFilePersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	cfg := Config{Mode: ModeFull, Interface: "x", ServerIP: ip("10.0.0.1"), Subnet: netip.MustParsePrefix("10.0.0.0/24"),
		PoolStart: ip("10.0.0.10"), PoolEnd: ip("10.0.0.20"), LeaseFile: path}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := openLeaseFile(path, s.leases)
	if err != nil {
		t.Fatal(err)
	}
	s.leases.notify = make(chan struct{}, 1)
	now := time.Now()
	a := offerAck(t, s.leases, hw(1), now)
	b := offerAck(t, s.leases, hw(2), now)
	if _, nak := s.leases.ack(hw(3), ip("10.0.0.5"), ip("10.0.0.5"), "res", now); nak != "" {
		t.Fatal(nak)
	}
	s.leases.release(hw(2), b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := lf.run(ctx, s.leases); err != nil {
		t.Fatal(err)
	}
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]string{}
	for _, l := range s2.Leases() {
		got[l.IP] = l.MAC.String()
	}
	want := map[netip.Addr]string{a: hw(1).mac().String(), ip("10.0.0.5"): hw(3).mac().String()}
	if len(got) != len(want) || got[a] != want[a] || got[ip("10.0.0.5")] != want[ip("10.0.0.5")] {
		t.Errorf("restored leases %v, want %v", got, want)
	}
}

func BenchmarkOfferAck(b *testing.B) {
	cfg := Config{ServerIP: ip("10.1.0.1"), Subnet: netip.MustParsePrefix("10.1.0.0/16"),
		PoolStart: ip("10.1.0.2"), PoolEnd: ip("10.1.255.254"), LeaseTime: time.Hour}
	lt := newLeaseTable(&cfg, false)
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h := keyOf([]byte{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
		a, _ := lt.offer(h, netip.Addr{}, netip.Addr{}, "", now)
		lt.ack(h, a, netip.Addr{}, "", now)
		i = (i + 1) % 60000
	}
}
