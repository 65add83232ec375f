package dataplane_test

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// Applying the same state twice changes nothing (not one netlink
// notification, not one nftables rule handle), and neither does a new
// Plane on a host another Plane set up (an agent restart): a ping across
// the two hosts runs on without a loss while it adopts the host.
func TestIdempotentAndAdoptedWithoutFlap(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("keep", 600, true, "10.7.0.0/24", "10.7.1.0/24")
	k1 := c.addVM("k1", "keep", 0, "10.7.0.2")
	k1.fip = netip.MustParseAddr("203.0.113.120")
	k2 := c.addVM("k2", "keep", 1, "10.7.1.3")
	h := c.lab.Hosts[0]

	first, err := h.Watch()
	if err != nil {
		t.Fatal(err)
	}
	c.apply()
	c.mustPing("k1", k2.addr)
	first.Settle(300 * time.Millisecond)
	if n := len(first.Stop()); n == 0 {
		t.Fatal("the first Apply made no netlink notification: the watch sees nothing")
	}

	watchHost := func() (stop func() []string) {
		t.Helper()
		var ws []*dataplanetest.Watch
		for _, path := range []string{h.Path(), netns.Path(c.planes[0].RouterNetns(600))} {
			w, err := dataplanetest.WatchPath(path)
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		return func() []string {
			var all []string
			for _, w := range ws {
				w.Settle(300 * time.Millisecond)
				all = append(all, w.Stop()...)
			}
			return all
		}
	}
	rulesBefore := ruleHandles(t, h.Path(), netns.Path(c.planes[0].RouterNetns(600)))

	// The same state again.
	stop := watchHost()
	if err := c.planes[0].Apply(context.Background(), c.state(0)); err != nil {
		t.Fatal(err)
	}
	if msgs := stop(); len(msgs) > 0 {
		t.Errorf("applying the same state again changed the host: %v", msgs)
	}

	// A new Plane (the agent restarted) while k1 pings k2 every 10ms.
	pinger, err := k1.ns.NewPinger()
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Close()
	var sent, lost atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			default:
			}
			sent.Add(1)
			if _, err := pinger.Ping(k2.addr, time.Second); err != nil {
				lost.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	stop = watchHost()
	c.planes[0].Close()
	c.planes[0] = c.newPlane(h)
	if err := c.planes[0].Apply(context.Background(), c.state(0)); err != nil {
		t.Fatal(err)
	}
	msgs := stop()
	time.Sleep(500 * time.Millisecond)
	close(done)
	<-finished
	if len(msgs) > 0 {
		t.Errorf("a new Plane applying the state there changed the host: %v", msgs)
	}
	if lost.Load() > 0 || sent.Load() < 20 {
		t.Errorf("while a new Plane adopted the host, %d of %d pings were lost", lost.Load(), sent.Load())
	}
	if after := ruleHandles(t, h.Path(), netns.Path(c.planes[0].RouterNetns(600))); !slices.Equal(rulesBefore, after) {
		t.Errorf("nftables rules were replaced:\nbefore %v\nafter  %v", rulesBefore, after)
	}
	// And it still works.
	c.mustPing("k1", k2.addr)
	if err := c.lab.Internet.Ping(k1.fip, 50); err != nil {
		t.Errorf("k1 does not answer pings through its floating IP: %v", err)
	}
}

// ruleHandles lists every nftables rule of the namespaces as
// table/chain/handle: a rule deleted and added again gets a new handle.
func ruleHandles(t *testing.T, paths ...string) []string {
	t.Helper()
	var out []string
	for _, path := range paths {
		err := netns.DoPath(path, func() error {
			conn, err := nftables.New()
			if err != nil {
				return err
			}
			chains, err := conn.ListChains()
			if err != nil {
				return err
			}
			for _, ch := range chains {
				rules, err := conn.GetRules(ch.Table, ch)
				if err != nil {
					return err
				}
				for _, r := range rules {
					out = append(out, path+" "+ch.Table.Name+"/"+ch.Name+"/"+itoa(r.Handle))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatal("no nftables rules at all")
	}
	return out
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// A host given a state without networks is left as it was before any:
// links, namespaces and tables, even by a new Plane that never knew
// them; what is not Hearth's is untouched.
func TestRemovingEverythingLeavesNothing(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("gone", 700, true, "10.8.0.0/24")
	c.addNet("gone2", 701, false, "10.9.0.0/24", "fd00:9::/64")
	g1 := c.addVM("g1", "gone", 0, "10.8.0.2")
	g1.fip = netip.MustParseAddr("203.0.113.130")
	c.addVM("g2", "gone", 1, "10.8.0.3")
	c.addVM("g3", "gone2", 0, "10.9.0.2")
	c.addVM("g4", "gone2", 1, "10.9.0.3")

	// Things that are not Hearth's, some with names like Hearth's.
	for _, h := range c.lab.Hosts {
		if _, err := h.IP("link", "add", "hbrx", "type", "bridge"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.IP("link", "add", "hvx0900", "type", "bridge"); err != nil {
			t.Fatal(err)
		}
		err := netns.DoPath(h.Path(), func() error {
			conn, err := nftables.New()
			if err != nil {
				return err
			}
			conn.AddTable(&nftables.Table{Name: "hearth", Family: nftables.TableFamilyINet})
			conn.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyBridge})
			return conn.Flush()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	other, err := netns.Create(c.lab.Hosts[0].RouterPrefix() + "router-x")
	if err != nil {
		t.Fatal(err)
	}
	other.Close()

	before := make([]string, len(c.lab.Hosts))
	for i, h := range c.lab.Hosts {
		before[i] = hostInventory(t, h, c.lab.Prefix)
	}
	// One port is a tap, as QEMU's NICs are.
	tapState := func(s dataplane.HostState) dataplane.HostState {
		for i := range s.Networks {
			if s.Networks[i].VNI == 701 {
				s.Networks[i].Ports = append(s.Networks[i].Ports, dataplane.Port{
					Name: dataplane.PortName("tap-vm"), MAC: []byte{0x52, 0x54, 0, 1, 2, 3}, Addresses: []netip.Addr{netip.MustParseAddr("10.9.0.9")},
				})
			}
		}
		return s
	}
	for i, p := range c.planes {
		if err := p.Apply(context.Background(), tapState(c.state(i))); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.lab.Hosts[0].IP("-d", "link", "show", dataplane.PortName("tap-vm"))
	if err != nil || !strings.Contains(out, "tun type tap") || !strings.Contains(out, "master hbr701") || !strings.Contains(out, "mtu 1450") {
		t.Errorf("the tap port is not a tap on hbr701 with the network's MTU: %v\n%s", err, out)
	}
	if during := hostInventory(t, c.lab.Hosts[0], c.lab.Prefix); during == before[0] {
		t.Fatal("applying the networks changed nothing the inventory shows")
	}

	// Host 0: the agent restarted and the new one has nothing to carry.
	c.planes[0].Close()
	c.planes[0] = c.newPlane(c.lab.Hosts[0])
	for i, p := range c.planes {
		if err := p.Apply(context.Background(), dataplane.HostState{Underlay: c.lab.Hosts[i].DataplaneUnderlay()}); err != nil {
			t.Fatal(err)
		}
	}
	for i, h := range c.lab.Hosts {
		if after := hostInventory(t, h, c.lab.Prefix); after != before[i] {
			t.Errorf("%s is not as it was:\nbefore:\n%s\nafter:\n%s", h.Name, before[i], after)
		}
	}
}

// hostInventory describes what a host has: links, FDB entries,
// nftables tables, and the lab's namespaces.
func hostInventory(t *testing.T, h *dataplanetest.Host, prefix string) string {
	t.Helper()
	links, err := h.IP("-br", "link")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(links, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, strings.Split(f[0], "@")[0])
		}
	}
	sort.Strings(names)
	fdb, err := h.Bridge("fdb", "show")
	if err != nil {
		t.Fatal(err)
	}
	var fdbLines []string
	for _, line := range strings.Split(fdb, "\n") {
		// Entries bridges learn come and go by themselves.
		if line != "" && (strings.Contains(line, "permanent") || strings.Contains(line, "static")) {
			fdbLines = append(fdbLines, line)
		}
	}
	sort.Strings(fdbLines)
	var tables []string
	err = netns.DoPath(h.Path(), func() error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		ts, err := conn.ListTables()
		for _, tb := range ts {
			tables = append(tables, tb.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(tables)
	var nss []string
	entries, _ := os.ReadDir(netns.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), h.RouterPrefix()) {
			nss = append(nss, e.Name())
		}
	}
	_ = prefix
	return "links: " + strings.Join(names, " ") + "\ntables: " + strings.Join(tables, " ") +
		"\nnamespaces: " + strings.Join(nss, " ") + "\nfdb:\n" + strings.Join(fdbLines, "\n")
}
