package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
)

// TestNetStateDuringMigration: red/a moves live from h1 to h2 (nsWorld).
// While it moves, the server keeps its port and floating IP on h1
// (api.VMPortHost): h1, whose cache no longer holds the VM, still carries
// its tap and floating IP through leavingTracker; h2 has its tap (QEMU
// opens it to receive the VM) and no forwarding entry for its MAC; the
// floating IP is not on h2. Once the server moved the port, h2 carries
// the floating IP and h1 points the MAC at h2.
func TestNetStateDuringMigration(t *testing.T) {
	aMAC := "52:54:00:00:00:0a"
	moving := func() *api.VirtualMachine {
		vm := nsVM("red", "a", "uid-red-a", "h2", "net one 192.168.1.10 "+aMAC)
		vm.Status.Host, vm.Status.Phase = "h1", api.VMMigrating
		return vm
	}
	network := func(st dataplane.HostState, name string) dataplane.Network {
		for _, n := range st.Networks {
			if n.Name == name {
				return n
			}
		}
		t.Fatalf("network %s not carried: %+v", name, st.Networks)
		return dataplane.Network{}
	}
	hasPort := func(n dataplane.Network, mac string) bool {
		return slices.ContainsFunc(n.Ports, func(p dataplane.Port) bool { return p.MAC.String() == mac })
	}
	remoteAt := func(n dataplane.Network, mac string) netip.Addr {
		for _, r := range n.Remote {
			if r.MAC.String() == mac {
				return r.Host
			}
		}
		return netip.Addr{}
	}
	fip := netip.MustParseAddr("203.0.113.50")
	hasFIP := func(n dataplane.Network) bool {
		return slices.ContainsFunc(n.FloatingIPs, func(f dataplane.FloatingIP) bool { return f.External == fip })
	}

	// h1, the source, while the VM moves: the tracker saw it here, then
	// it left the cache.
	src := nsWorld()
	var tr leavingTracker
	before := src.VMs[0]
	before.Status.Host, before.Status.Phase = "h1", api.VMRunning
	tr.update("h1", src.VMs)
	src.VMs = src.VMs[1:]
	src.Leaving = tr.update("h1", src.VMs)
	out := hostNetState(src)
	if len(out.Problems) > 0 {
		t.Fatalf("source: problems %v", out.Problems)
	}
	red := network(out.State, "red/net")
	if !hasPort(red, aMAC) || !hasFIP(red) {
		t.Errorf("source while moving: port %v, floating IP %v; want both kept (the guest still runs here)", hasPort(red, aMAC), hasFIP(red))
	}
	// Without the tracker its tap would go at once.
	src.Leaving = nil
	if hasPort(network(hostNetState(src).State, "red/net"), aMAC) {
		t.Errorf("the source carries the port without the tracker: the test proves nothing")
	}

	// h2, the destination, while the VM moves.
	dst := nsWorld()
	dst.Host, dst.Underlay.Address = "h2", netip.MustParseAddr("10.0.0.2")
	dst.VMs = []*api.VirtualMachine{moving()}
	out = hostNetState(dst)
	if len(out.Problems) > 0 {
		t.Fatalf("destination: problems %v", out.Problems)
	}
	red = network(out.State, "red/net")
	if !hasPort(red, aMAC) {
		t.Errorf("destination while moving: no tap for the incoming VM; QEMU cannot open it")
	}
	if a := remoteAt(red, aMAC); a.IsValid() {
		t.Errorf("destination while moving: a forwarding entry for the VM at %s next to its own tap", a)
	}
	if hasFIP(red) {
		t.Errorf("destination while moving: carries the floating IP the source still serves")
	}

	// Done: the server moved the port and the floating IP to h2.
	done := func(in netInputs) netInputs {
		for _, n := range in.Networks {
			if n.Metadata.Name == "net" && n.Metadata.Tenant == "red" {
				n.Status.Ports[0].Host = "h2"
			}
		}
		in.FloatingIPs[0].Status.Host = "h2"
		return in
	}
	dst = done(dst)
	vm := moving()
	vm.Status.Host, vm.Status.Phase = "h2", api.VMRunning
	dst.VMs = []*api.VirtualMachine{vm}
	if red := network(hostNetState(dst).State, "red/net"); !hasPort(red, aMAC) || !hasFIP(red) {
		t.Errorf("destination after the move: port %v, floating IP %v; want both", hasPort(red, aMAC), hasFIP(red))
	}
	src = done(nsWorld())
	src.VMs = src.VMs[1:]
	tr.release("red/a", "uid-red-a")
	src.Leaving = tr.update("h1", src.VMs)
	red = network(hostNetState(src).State, "red/net")
	if hasPort(red, aMAC) || hasFIP(red) || remoteAt(red, aMAC) != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("source after the move: port %v, floating IP %v, MAC forwarded to %v; want only the forwarding entry to 10.0.0.2",
			hasPort(red, aMAC), hasFIP(red), remoteAt(red, aMAC))
	}
}

// TestLeavingTracker: a VM that leaves the cache is leaving until
// released or back, whatever its status said when the last network state
// was computed: a VM seen Pending then (its QEMU started after that
// Apply, and its status change asked for none) and moved live before the
// next Apply runs here all the same, and must keep its taps. One being
// deleted is not leaving, nor one released before an update saw it go.
func TestLeavingTracker(t *testing.T) {
	vm := func(name, statusHost, phase string, deleting bool) *api.VirtualMachine {
		v := nsVM("red", name, "uid-"+name, "h1")
		v.Status.Host, v.Status.Phase = statusHost, phase
		if deleting {
			now := time.Now()
			v.Metadata.DeletionTimestamp = &now
		}
		return v
	}
	all := []*api.VirtualMachine{
		vm("running", "h1", api.VMRunning, false),
		vm("starting", "", api.VMPending, false),
		vm("stopped", "h1", api.VMStopped, false),
		vm("deleting", "h1", api.VMRunning, true),
		vm("incoming", "h3", api.VMMigrating, false),
	}
	names := func(vms []*api.VirtualMachine) []string {
		var out []string
		for _, v := range vms {
			out = append(out, v.Metadata.Name)
		}
		return out
	}
	var tr leavingTracker
	if got := tr.update("h1", all); len(got) != 0 {
		t.Fatalf("nothing left yet, got %v", names(got))
	}
	want := []string{"incoming", "running", "starting", "stopped"}
	for range 2 { // and it stays leaving
		if got := names(tr.update("h1", nil)); !slices.Equal(got, want) {
			t.Fatalf("leaving = %v, want %v", got, want)
		}
	}
	for _, name := range want {
		if tr.release("red/"+name, "uid-other") {
			t.Errorf("release %s with another VM's uid: it was leaving", name)
		}
		if !tr.release("red/"+name, "uid-"+name) || tr.release("red/"+name, "uid-"+name) {
			t.Errorf("release %s: want true once, then false", name)
		}
	}
	if got := tr.update("h1", nil); len(got) != 0 {
		t.Errorf("after release: %v", names(got))
	}
	// A VM that comes back is no longer leaving.
	tr.update("h1", all[:1])
	tr.update("h1", nil)
	if got := tr.update("h1", all[:1]); len(got) != 0 {
		t.Errorf("back here, still leaving: %v", names(got))
	}
	// Released (torn down here) before an update saw it go: not leaving.
	if tr.release("red/running", "uid-running") {
		t.Errorf("release of a VM placed here: it was not leaving")
	}
	if got := tr.update("h1", nil); len(got) != 0 {
		t.Errorf("released before it left, then leaving: %v", names(got))
	}
	// A VM deleted and made again under the same name while the first
	// one's QEMU here still stops: the first one's release is not the
	// second's, which, moved live, is leaving.
	again := vm("running", "h1", api.VMRunning, false)
	again.Metadata.UID = "uid-running-again"
	tr.update("h1", []*api.VirtualMachine{again})
	tr.release("red/running", "uid-running")
	if got := tr.update("h1", nil); len(got) != 1 || got[0].Metadata.UID != "uid-running-again" {
		t.Errorf("the second VM of the name, moved after the first's release: leaving %v, want it", names(got))
	}
}

// TestNetStateAdoptedLeaving: an agent restarted while red/a moves from
// h1 to h2 has a fresh leavingTracker, which never saw the VM here; the
// VM (spec.host h2, status.host h1, as the API has it) is adopted
// (adoptLeaving), so h1 keeps its port and floating IP across updates
// until release says its QEMU here is gone, and not after.
func TestNetStateAdoptedLeaving(t *testing.T) {
	aMAC := "52:54:00:00:00:0a"
	src := nsWorld()
	moving := api.DeepCopy(src.VMs[0]).(*api.VirtualMachine)
	moving.Spec.Host, moving.Status.Host, moving.Status.Phase = "h2", "h1", api.VMMigrating
	src.VMs = src.VMs[1:] // not in the restarted agent's cache
	fip := netip.MustParseAddr("203.0.113.50")
	carried := func(in netInputs) (port, floating bool) {
		for _, n := range hostNetState(in).State.Networks {
			if n.Name != "red/net" {
				continue
			}
			port = slices.ContainsFunc(n.Ports, func(p dataplane.Port) bool { return p.MAC.String() == aMAC })
			floating = slices.ContainsFunc(n.FloatingIPs, func(f dataplane.FloatingIP) bool { return f.External == fip })
		}
		return port, floating
	}
	var tr leavingTracker
	src.Leaving = tr.update("h1", src.VMs)
	if port, _ := carried(src); port {
		t.Fatalf("a fresh tracker carries the port before adoption: the test proves nothing")
	}
	tr.adopt(moving)
	for i := range 2 { // the first update after adoption, and a later one
		src.Leaving = tr.update("h1", src.VMs)
		if port, floating := carried(src); !port || !floating {
			t.Errorf("update %d after adoption: port %v, floating IP %v; want both kept (the guest still runs here)", i, port, floating)
		}
	}
	if !tr.release(vmKey(moving), moving.Metadata.UID) {
		t.Errorf("release of the adopted VM: not leaving")
	}
	src.Leaving = tr.update("h1", src.VMs)
	if port, _ := carried(src); port {
		t.Errorf("the port stays after release")
	}
}
