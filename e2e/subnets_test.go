package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"hearth.dev/hearth/flock"
)

// reserveSubnets picks n /24s of 172.31.0.0/16 that no route of the root
// namespace overlaps, for a sandbox's underlay and provisioning networks,
// and holds a machine-wide lock until release is called, which the caller
// does once `sandbox up` has made its routes. Test processes running at
// once, a demo, or a sandbox a killed test left behind then never collide
// on a range (they did with fixed ranges: "the underlay … overlaps the
// route …").
func reserveSubnets(t *testing.T, n int) (subnets []netip.Prefix, release func()) {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "hearth-e2e-subnets")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	unlock, err := flock.Lock(ctx, dir, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("waiting for the e2e subnet lock: %v", err)
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		unlock()
		t.Fatalf("listing routes: %v", err)
	}
	used := func(p netip.Prefix) bool {
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
			if ok && ones > 0 && netip.PrefixFrom(a, ones).Overlaps(p) {
				return true
			}
		}
		return false
	}
	// Start where this process's id points, so processes that do not
	// wait for each other (an older test binary) still rarely meet.
	start := os.Getpid() % 200
	for i := 0; i < 250 && len(subnets) < n; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("172.31.%d.0/24", (start+i)%250))
		if !used(p) {
			subnets = append(subnets, p)
		}
	}
	if len(subnets) < n {
		unlock()
		t.Fatalf("no %d free /24s left in 172.31.0.0/16 (routes: %v)", n, routes)
	}
	return subnets, unlock
}
