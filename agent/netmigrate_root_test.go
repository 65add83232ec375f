package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/cloudinit"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns/pingtest"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/testguest"
)

// movingGuest is the migrating guest's user-data: a static address on its
// NIC (there is no DHCP server in this lab), then, with dirty set, 16 MiB
// of RAM filled with a random pattern that it checks and partly rewrites
// every half second, printing a counter; without it, only the counter
// (an idle guest).
func movingGuest(ip, gw string, dirty bool) string {
	work := `echo "HEARTH-GUEST tick=$i memory=ok" >/dev/ttyS0`
	prep := ""
	if dirty {
		prep = `dd if=/dev/urandom of=/dev/shm/pattern bs=1M count=16 2>/dev/null
want=$(md5sum </dev/shm/pattern)
`
		work = `dd if=/dev/shm/pattern of=/dev/shm/copy bs=1M count=4 2>/dev/null
	dd if=/dev/shm/copy of=/dev/shm/pattern bs=1M count=4 conv=notrunc 2>/dev/null
	if [ "$(md5sum </dev/shm/pattern)" = "$want" ]; then ok=ok; else ok=bad; fi
	echo "HEARTH-GUEST tick=$i memory=$ok" >/dev/ttyS0`
	}
	return `#!/bin/sh
ip addr flush dev eth0
ip addr add ` + ip + `/24 dev eth0
ip link set eth0 up
ip route add default via ` + gw + `
echo "HEARTH-GUEST static-ip=` + ip + `" >/dev/ttyS0
` + prep + `(
i=0
while :; do
	i=$((i+1))
	` + work + `
	sleep 0.5
done
) </dev/null >/dev/null 2>&1 &
`
}

var movingTickRE = regexp.MustCompile(`HEARTH-GUEST tick=(\d+) memory=(\w+)`)

// TestLiveMigrationWithNICs moves a real test guest (QEMU, TCG) with a
// NIC on a tenant network between two simulated hosts (network
// namespaces, each with its own data plane: bridge, VXLAN, router,
// nftables), while a peer on a third host pings it every 10 ms. The
// hosts' states are what hostNetState computes from the API at each step
// of a live migration, as the server publishes it (api.VMPortHost) and
// the agents see it (the source's cache no longer holds the VM:
// leavingTracker): the destination makes the VM's tap before its QEMU
// starts with -incoming; the source keeps the VM's port and floating IP
// while it moves; once the destination has the VM, every host points the
// VM's MAC at the new host, the floating IP moves there, the source's tap
// goes, and the destination announces the NICs (compute.QEMU.Announce).
// The stream is TLS between the hosts' underlay addresses, with each
// host's certificate of one migration CA.
//
// First a migration that fails (the destination is gone): the guest keeps
// running on the source, answering its peer and its floating IP. Then
// HEARTH_MIGRATIONS moves (default 2: there and back) for each guest in
// HEARTH_MIGRATION_GUESTS (default "dirty"; "idle,dirty" for the figures
// in docs/BENCHMARKS.md). After each, the guest's counter carries on (no
// reboot), its memory checks pass, the peer lost at most a few pings,
// and the internet answers through the floating IP on the new host. It
// logs, per guest, QEMU's downtime and the peer's longest ping gap, p50
// and p95.
func TestLiveMigrationWithNICs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces, bridges, VXLAN devices and nftables tables")
	}
	for _, tool := range []string{"ip", "nsenter", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (scripts/deps.sh installs it)", tool)
		}
	}
	if testing.Short() {
		t.Skip("boots and migrates a guest; not in -short mode")
	}
	rounds := 2
	if s := os.Getenv("HEARTH_MIGRATIONS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			t.Fatalf("HEARTH_MIGRATIONS=%q: want a number of migrations, 1 or more", s)
		}
	}
	kinds := []string{"dirty"}
	if s := os.Getenv("HEARTH_MIGRATION_GUESTS"); s != "" {
		kinds = strings.Split(s, ",")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	guest, err := testguest.Build(ctx, "")
	if err != nil {
		t.Fatalf("building the test guest: %v", err)
	}
	ml := newMigrationLab(t)
	for _, kind := range kinds {
		if kind != "idle" && kind != "dirty" {
			t.Fatalf("HEARTH_MIGRATION_GUESTS: %q is not idle or dirty", kind)
		}
		t.Run(kind, func(t *testing.T) { ml.run(ctx, t, guest, kind == "dirty", rounds) })
	}
}

// migrationLab is three simulated hosts with a data plane each, a tenant
// network on them, and a peer on h2.
type migrationLab struct {
	t      *testing.T
	lab    *dataplanetest.Lab
	planes []*dataplane.Linux
	qemus  []*compute.QEMU
	peer   *dataplanetest.Namespace
	addrs  map[string]netip.Addr
	// leaving is each host's tracker.
	leaving []leavingTracker
	peerUp  bool
	// tls is each host's migration TLS directory: certificates of one
	// migration CA, for the host's underlay address.
	tls []string
}

var migHosts = []string{"h0", "h1", "h2"}

const (
	migVNI      = 4711
	migMAC      = "52:54:00:77:00:0a"
	migIP       = "10.77.1.10"
	migPeerMAC  = "52:54:00:77:00:14"
	migPeerIP   = "10.77.1.20"
	migGateway  = "10.77.1.1"
	migFIP      = "203.0.113.77"
	migPeerUID  = "uid-peer"
	migPeerName = "peer"
)

func newMigrationLab(t *testing.T) *migrationLab {
	lab, err := dataplanetest.New(dataplanetest.Config{Hosts: len(migHosts)})
	if err != nil {
		t.Fatal(err)
	}
	ml := &migrationLab{t: t, lab: lab, addrs: map[string]netip.Addr{}, leaving: make([]leavingTracker, len(migHosts))}
	t.Cleanup(func() {
		for _, p := range ml.planes {
			p.Close()
		}
		if err := lab.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	if nsExt().Spec.CIDR != lab.Config.Internet.String() || nsExt().Spec.Gateway != lab.InternetGateway.String() {
		t.Fatalf("the lab's internet %s (gateway %s) is not nsExt's", lab.Config.Internet, lab.InternetGateway)
	}
	dir := t.TempDir()
	ca, err := pki.NewMigrationCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range lab.Hosts {
		ml.addrs[migHosts[i]] = h.Underlay
		key, csr, err := pki.NewMigrationKey(migHosts[i])
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.IssueMigration(migHosts[i], h.Underlay.AsSlice(), csr, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ml.tls = append(ml.tls, filepath.Join(dir, "tls-"+migHosts[i]))
		if err := compute.WriteMigrationTLS(ml.tls[i], ca.CertPEM, cert, key); err != nil {
			t.Fatal(err)
		}
		p, err := dataplane.New(dataplane.Config{HostNetns: h.Path(), NetnsPrefix: h.RouterPrefix()})
		if err != nil {
			t.Fatal(err)
		}
		ml.planes = append(ml.planes, p)
		// QEMU runs in the host's namespace, as an agent's QEMU does on
		// its host: it opens the host's tap and listens on (or connects
		// to) the host's underlay address.
		wrapper := filepath.Join(dir, "qemu-"+migHosts[i])
		script := "#!/bin/sh\nexec nsenter --net=" + h.Path() + " qemu-system-x86_64 \"$@\"\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		ml.qemus = append(ml.qemus, compute.NewQEMU(compute.QEMUOptions{Binary: wrapper}))
	}
	if ml.peer, err = lab.NewVM(migPeerName); err != nil {
		t.Fatal(err)
	}
	return ml
}

// world is the API as host sees it, with the moving VM as mover (nil:
// not in host's cache), its port and floating IP on portHost.
func (ml *migrationLab) world(i int, mover *api.VirtualMachine, portHost string) netInputs {
	host := migHosts[i]
	peer := nsVM("lab", migPeerName, migPeerUID, "h2", "net one "+migPeerIP+" "+migPeerMAC)
	peer.Status.Host, peer.Status.Phase = "h2", api.VMRunning
	hosts := []string{portHost, "h2"}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	n := nsNet("lab", "net", migVNI, func(n *api.Network) {
		n.Spec.ExternalNetwork = "internet"
		n.Status.Hosts = hosts
		n.Status.Ports = []api.NetworkPort{
			{VM: "mover", Host: portHost, MAC: migMAC, IPs: []string{migIP}},
			{VM: migPeerName, Host: "h2", MAC: migPeerMAC, IPs: []string{migPeerIP}},
		}
		for _, h := range hosts {
			n.Status.Routers = append(n.Status.Routers, api.NetworkRouter{Host: h, ExternalAddress: fmt.Sprintf("203.0.113.%d", 10+slices.Index(migHosts, h))})
		}
	})
	vms := []*api.VirtualMachine{peer}
	if mover != nil {
		vms = append(vms, mover)
	}
	in := netInputs{Host: host, Underlay: ml.lab.Hosts[i].DataplaneUnderlay(), Networks: []*api.Network{n},
		Subnets:          []*api.Subnet{nsSubnet("lab", "one", "net", "10.77.1.0/24")},
		FloatingIPs:      []*api.FloatingIP{nsFIP("lab", "public", "mover", migFIP, migIP, portHost)},
		ExternalNetworks: []*api.ExternalNetwork{nsExt()}, HostAddresses: ml.addrs,
		ExternalDevices: map[string]string{"": dataplanetest.ExternalLink}}
	// What the agent's cache holds: the VMs placed on this host.
	for _, vm := range vms {
		if vm.Spec.Host == host {
			in.VMs = append(in.VMs, vm)
		}
	}
	in.Leaving = ml.leaving[i].update(host, in.VMs)
	return in
}

// apply computes host i's state from in and applies it; the peer's port
// is a veth into its namespace.
func (ml *migrationLab) apply(ctx context.Context, i int, in netInputs) netState {
	t := ml.t
	st := hostNetState(in)
	if len(st.Problems) > 0 {
		t.Fatalf("%s: problems %v", migHosts[i], st.Problems)
	}
	for j := range st.State.Networks {
		for k := range st.State.Networks[j].Ports {
			if p := &st.State.Networks[j].Ports[k]; p.Name == dataplane.PortName(portKey(migPeerUID, 0)) {
				p.Veth = &dataplane.VethPeer{Netns: ml.peer.Path()}
			}
		}
	}
	if err := ml.planes[i].Apply(ctx, st.State); err != nil {
		t.Fatalf("%s: Apply: %v", migHosts[i], err)
	}
	return st
}

// run boots a guest on h0 and moves it rounds times between h0 and h1.
func (ml *migrationLab) run(ctx context.Context, t *testing.T, guest testguest.Guest, dirty bool, rounds int) {
	uid := "uid-mover-" + strconv.FormatBool(dirty)
	tap := dataplane.PortName(portKey(uid, 0))
	mover := func(specHost, statusHost, phase string) *api.VirtualMachine {
		vm := nsVM("lab", "mover", uid, specHost, "net one "+migIP+" "+migMAC)
		vm.Status.Host, vm.Status.Phase = statusHost, phase
		return vm
	}
	applyAll := func(vm func(i int) *api.VirtualMachine, portHost string) {
		for i := range migHosts {
			ml.apply(ctx, i, ml.world(i, vm(i), portHost))
		}
	}
	// Running on h0.
	applyAll(func(i int) *api.VirtualMachine {
		if i == 0 {
			return mover("h0", "h0", api.VMRunning)
		}
		return nil
	}, "h0")
	if !ml.peerUp {
		if err := ml.peer.Configure(netip.MustParsePrefix(migPeerIP+"/24"), netip.MustParseAddr(migGateway)); err != nil {
			t.Fatal(err)
		}
		ml.peerUp = true
	}

	id := migUUID(t)
	seed := cloudinit.Seed{InstanceID: uid, Hostname: "mover", UserData: movingGuest(migIP, migGateway, dirty)}
	// spec is the VM on host; with incoming, waiting for it from host
	// from over TLS.
	spec := func(host int, incoming string, from int) compute.Spec {
		dir := t.TempDir()
		s := compute.Spec{ID: id, Name: "lab/mover", Dir: dir, CPUs: 1, MemoryMiB: 256, Firmware: "bios",
			Boot:     compute.Boot{From: "kernel", Kernel: guest.Kernel, Initrd: guest.Initrd, Cmdline: "console=ttyS0 panic=-1"},
			NICs:     []compute.NIC{{Tap: tap, MAC: migMAC}},
			Seed:     filepath.Join(dir, "seed.iso"),
			Incoming: incoming}
		if incoming != "" {
			s.IncomingTLS = &compute.MigrationTLS{Dir: ml.tls[host], Peer: migHosts[from]}
		}
		if err := seed.WriteISO(s.Seed); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { migKill(s) })
		return s
	}
	src := spec(0, "", 0)
	if _, err := ml.qemus[0].Start(ctx, src); err != nil {
		t.Fatal(err)
	}
	waitTicks(t, src.Dir, 3, 5*time.Minute)
	ip, fip := netip.MustParseAddr(migIP), netip.MustParseAddr(migFIP)
	if err := ml.peer.Ping(ip, 50); err != nil {
		t.Fatalf("before any move, the peer on h2 does not reach the guest on h0: %v", err)
	}
	if err := ml.lab.Internet.Ping(fip, 50); err != nil {
		t.Fatalf("before any move, the internet does not reach the guest's floating IP on h0: %v", err)
	}

	// A move that fails: h1 prepares (its tap, the VM not yet its
	// port), its QEMU dies before the source sends anything. The guest
	// goes on on h0, reachable as before.
	moving := func(from, to int) {
		for i := range migHosts {
			var vm *api.VirtualMachine
			if i == to {
				vm = mover(migHosts[to], migHosts[from], api.VMMigrating)
			}
			ml.apply(ctx, i, ml.world(i, vm, migHosts[from]))
		}
	}
	moving(0, 1)
	if in := ml.world(0, nil, "h0"); len(in.Leaving) != 1 {
		t.Fatalf("the source does not see the VM leaving: %v", in.Leaving)
	}
	bad := spec(1, fmt.Sprintf("tcp:%s:%d", ml.addrs["h1"], 20000+mrand.IntN(20000)), 0)
	if _, err := ml.qemus[1].Start(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if err := ml.qemus[1].Kill(ctx, bad.ID, bad.Dir); err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err := ml.qemus[0].Migrate(mctx, src.ID, src.Dir, bad.Incoming, &compute.MigrationTLS{Dir: ml.tls[0], Hostname: ml.addrs["h1"].String()})
	mcancel()
	if err == nil {
		t.Fatal("a migration to a destination that is gone succeeded")
	}
	moving(0, 1) // the agents' next Apply: nothing changed
	if err := ml.peer.Ping(ip, 25); err != nil {
		t.Errorf("after a failed move, the peer does not reach the guest on the source: %v", err)
	}
	if err := ml.lab.Internet.Ping(fip, 25); err != nil {
		t.Errorf("after a failed move, the floating IP does not answer on the source: %v", err)
	}
	if _, running, err := ml.qemus[0].Lookup(ctx, src.ID, src.Dir); !running || err != nil {
		t.Fatalf("after a failed move, the source's guest is not running (%v)", err)
	}

	var downtimes, gaps []time.Duration
	from := 0
	for round := range rounds {
		to := 1 - from
		before := lastTick(t, src.Dir)
		moving(from, to)
		dst := spec(to, fmt.Sprintf("tcp:%s:%d", ml.addrs[migHosts[to]], 20000+mrand.IntN(20000)), from)
		if _, err := ml.qemus[to].Start(ctx, dst); err != nil {
			t.Fatalf("round %d: starting the destination: %v", round, err)
		}
		probe := pingtest.Start(t, ml.peer.Name, ip, 10*time.Millisecond)
		time.Sleep(300 * time.Millisecond) // replies before the move
		mctx, mcancel := context.WithTimeout(ctx, 3*time.Minute)
		m, err := ml.qemus[from].Migrate(mctx, src.ID, src.Dir, dst.Incoming,
			&compute.MigrationTLS{Dir: ml.tls[from], Hostname: ml.addrs[migHosts[to]].String()})
		mcancel()
		if err != nil {
			probe.Stop()
			t.Fatalf("round %d: %v", round, err)
		}
		// As the agents do (migrate.go): the destination resumes the
		// guest once it reported it (the server moves the port and the
		// floating IP: every host applies) and announces its NICs; the
		// source, seeing that, kills its paused copy and lets its ports
		// go.
		if err := ml.qemus[to].Resume(ctx, dst.ID, dst.Dir); err != nil {
			t.Fatalf("round %d: resuming the destination: %v", round, err)
		}
		if err := ml.qemus[from].Kill(ctx, src.ID, src.Dir); err != nil {
			t.Fatal(err)
		}
		ml.leaving[from].release("lab/mover", uid)
		// The peer's host first: the others apply at the same time,
		// each on its own host.
		switched := time.Now()
		for _, i := range []int{2, to, from} {
			var vm *api.VirtualMachine
			if i == to {
				vm = mover(migHosts[to], migHosts[to], api.VMRunning)
			}
			ml.apply(ctx, i, ml.world(i, vm, migHosts[to]))
		}
		took := time.Since(switched)
		if err := ml.qemus[to].Announce(ctx, dst.ID, dst.Dir); err != nil {
			t.Errorf("round %d: announcing: %v", round, err)
		}
		time.Sleep(1500 * time.Millisecond) // replies after the move
		sent, got, gap := probe.Stop()
		t.Logf("round %d: %s → %s: QEMU downtime %v, total %v, %d MiB sent; the three hosts applied in %v; the peer's pings: %d of %d answered, longest gap %v",
			round, migHosts[from], migHosts[to], m.Downtime, m.Total, m.Transferred>>20, took.Round(time.Millisecond), got, sent, gap.Round(time.Millisecond))
		downtimes, gaps = append(downtimes, m.Downtime), append(gaps, gap)
		// At 10 ms a ping, "a few" lost is a gap of well under a second
		// on an idle machine; TCG on a loaded one is allowed 3 s.
		if gap > 3*time.Second {
			t.Errorf("round %d: the peer got no reply for %v", round, gap)
		}
		if got == 0 {
			t.Fatalf("round %d: the peer got no reply at all", round)
		}

		// The guest carried on, with its memory intact.
		deadline := time.Now().Add(time.Minute)
		for {
			after, ok := ticksIn(dst.Dir)
			if !ok {
				t.Fatalf("round %d: the guest's memory pattern changed across the move", round)
			}
			if len(after) >= 2 {
				if after[0] <= before {
					t.Fatalf("round %d: the counter was at %d before the move and went %v after: the guest did not carry on", round, before, after)
				}
				break
			}
			if time.Now().After(deadline) {
				info, running, err := ml.qemus[to].Lookup(ctx, dst.ID, dst.Dir)
				t.Fatalf("round %d: the guest printed %v on %s in a minute; its QEMU: %q (running %v, %v); console:\n%s\nqemu:\n%s", round, after, migHosts[to],
					info.Status, running, err, readTail(filepath.Join(dst.Dir, compute.ConsoleLog)), readTail(filepath.Join(dst.Dir, compute.StderrFile)))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := ml.lab.Internet.Ping(fip, 25); err != nil {
			t.Errorf("round %d: the floating IP does not answer after the move: %v", round, err)
		}
		// The source's tap is gone; the destination's is there.
		if _, err := ml.lab.Hosts[from].IP("link", "show", tap); err == nil {
			t.Errorf("round %d: the tap %s is still on %s", round, tap, migHosts[from])
		}
		if _, err := ml.lab.Hosts[to].IP("link", "show", tap); err != nil {
			t.Errorf("round %d: the tap %s is not on %s: %v", round, tap, migHosts[to], err)
		}
		src, from = dst, to
	}
	kind := "idle"
	if dirty {
		kind = "memory-dirtying"
	}
	t.Logf("%d migrations of a 256 MiB TCG %s guest with a NIC: QEMU downtime p50 %v p95 %v; the peer's ping gap p50 %v p95 %v",
		rounds, kind, pct(downtimes, 50), pct(downtimes, 95), pct(gaps, 50).Round(time.Millisecond), pct(gaps, 95).Round(time.Millisecond))
	if err := ml.qemus[from].Kill(ctx, src.ID, src.Dir); err != nil {
		t.Error(err)
	}
	// Leave the network to the next guest: it starts on h0.
	ml.leaving[from].release("lab/mover", uid)
	for i := range migHosts {
		ml.apply(ctx, i, ml.world(i, nil, "h0"))
	}
}

func ticksIn(dir string) (n []int, ok bool) {
	b, _ := os.ReadFile(filepath.Join(dir, compute.ConsoleLog))
	ok = true
	for _, m := range movingTickRE.FindAllStringSubmatch(string(b), -1) {
		i, _ := strconv.Atoi(m[1])
		n = append(n, i)
		ok = ok && m[2] == "ok"
	}
	return n, ok
}

func lastTick(t *testing.T, dir string) int {
	n, ok := ticksIn(dir)
	if !ok {
		t.Fatalf("the guest's memory pattern changed:\n%s", readTail(filepath.Join(dir, compute.ConsoleLog)))
	}
	if len(n) == 0 {
		return 0
	}
	return n[len(n)-1]
}

func waitTicks(t *testing.T, dir string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if n, _ := ticksIn(dir); len(n) >= want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the guest did not count to %d in %v; console:\n%s\nqemu:\n%s", want, timeout,
		readTail(filepath.Join(dir, compute.ConsoleLog)), readTail(filepath.Join(dir, compute.StderrFile)))
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func migUUID(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// migKill kills whatever QEMU runs from spec's directory.
func migKill(s compute.Spec) {
	b, err := os.ReadFile(filepath.Join(s.Dir, compute.PIDFile))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), s.ID) {
			syscall.Kill(pid, syscall.SIGKILL)
			for range 100 {
				if syscall.Kill(pid, 0) != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

// pct is the p-th percentile of ds (nearest rank).
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(float64(p)*float64(len(s))/100)) - 1
	return s[max(i, 0)]
}
