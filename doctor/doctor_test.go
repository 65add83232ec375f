package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/server/servertest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the checks make network namespaces and links")
	}
}

func needQEMU(t *testing.T) {
	t.Helper()
	for _, p := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed (apt-get install qemu-system-x86 qemu-utils)", p)
		}
	}
}

// byCheck indexes findings by their check.
func byCheck(fs []Finding) map[string]Finding {
	m := map[string]Finding{}
	for _, f := range fs {
		m[f.Check] = f
	}
	return m
}

// TestKernelFeatures tries every kernel feature on this machine, which has
// them all (DESIGN: bridge, veth, vxlan, tun, nftables), and checks that
// the throwaway namespace took everything with it.
func TestKernelFeatures(t *testing.T) {
	needRoot(t)
	before, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	got := byCheck(kernelFeatures(context.Background()))
	for _, c := range []string{"network-namespaces", "bridge", "veth", "vxlan", "tun", "nftables"} {
		f, ok := got[c]
		if !ok {
			t.Errorf("no finding for %s", c)
			continue
		}
		if f.Status != OK || f.Condition != condKernel {
			t.Errorf("%s: %s (%s) %q, want ok under %s", c, f.Status, f.Condition, f.Message, condKernel)
		}
	}
	after, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range after {
		if strings.HasPrefix(l.Attrs().Name, "hdoc-") {
			t.Errorf("link %s left in the host's namespace", l.Attrs().Name)
		}
	}
	if len(after) != len(before) {
		t.Logf("links before %d, after %d (other tests run here too)", len(before), len(after))
	}
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == "hearth-doctor" {
			t.Errorf("nftables table %s left in the host's namespace", tb.Name)
		}
	}
}

// TestTryLinksNamesWhatFailed makes the links the check makes while their
// names are taken, in a namespace of the test's: each failure is reported
// against its feature, with a fix.
func TestTryLinksNamesWhatFailed(t *testing.T) {
	needRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var first, second []Finding
	if err := netns.Do(ns, func() error {
		first = tryLinks()
		second = tryLinks() // every name is taken now
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range first {
		if f.Status != OK {
			t.Errorf("first try of %s: %s %q", f.Check, f.Status, f.Message)
		}
	}
	for _, f := range second {
		if f.Status != Fail || !strings.HasPrefix(f.Message, "making ") || f.Fix == "" {
			t.Errorf("second try of %s: %s %q (fix %q), want a failure saying why, with a fix", f.Check, f.Status, f.Message, f.Fix)
		}
	}
}

func TestJudgeBridgeNetfilter(t *testing.T) {
	tests := []struct {
		name         string
		loaded, call bool
		drops        []string
		want         Status
		fix          string
	}{
		{"not loaded: no security groups", false, false, nil, Warn, "modprobe br_netfilter"},
		{"loaded, not handing bridged traffic to IP, forward accepts", true, false, nil, OK, ""},
		// The bridges of networks with security groups hand theirs.
		{"loaded, not handing bridged traffic to IP, forward drops", true, false, []string{"ip filter/FORWARD"}, Warn, "DOCKER-USER"},
		{"loaded, forward accepts", true, true, nil, OK, ""},
		{"Docker: loaded, forward drops", true, true, []string{"ip filter/FORWARD"}, Warn, "DOCKER-USER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := judgeBridgeNetfilter(tt.loaded, tt.call, tt.drops)
			if f.Status != tt.want || !strings.Contains(f.Fix, tt.fix) {
				t.Errorf("got %s %q (fix %q), want %s with a fix naming %q", f.Status, f.Message, f.Fix, tt.want, tt.fix)
			}
			if f.Status == Warn && tt.drops != nil && !strings.Contains(f.Message, tt.drops[0]) {
				t.Errorf("message %q does not name the chain %s", f.Message, tt.drops[0])
			}
		})
	}
}

// TestForwardDropChains sets up, in a namespace of the test's, the
// FORWARD chain Docker leaves behind (iptables-nft's table ip filter,
// policy drop) and checks the check finds it, and finds nothing before.
func TestForwardDropChains(t *testing.T) {
	needRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var before, after []string
	err = netns.Do(ns, func() error {
		before = forwardDropChains()
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		filter := conn.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4})
		drop := nftables.ChainPolicyDrop
		conn.AddChain(&nftables.Chain{Name: "FORWARD", Table: filter, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		accept := nftables.ChainPolicyAccept
		conn.AddChain(&nftables.Chain{Name: "INPUT", Table: filter, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		if err := conn.Flush(); err != nil {
			return err
		}
		after = forwardDropChains()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 0 {
		t.Errorf("a fresh namespace has drop chains %v", before)
	}
	if fmt.Sprint(after) != "[ip filter/FORWARD]" {
		t.Errorf("found %v, want [ip filter/FORWARD]", after)
	}
}

// TestQEMU starts QEMU paused with each firmware, and sees a missing
// emulator and missing UEFI firmware reported with what to install.
func TestQEMU(t *testing.T) {
	needQEMU(t)
	ctx := context.Background()
	got := byCheck(Options{}.withDefaults().qemuChecks(ctx))
	for _, c := range []string{"qemu", "firmware-bios", "firmware-uefi"} {
		if f := got[c]; f.Status != OK {
			t.Errorf("%s: %s %q", c, f.Status, f.Message)
		}
	}

	o := Options{OVMFCode: filepath.Join(t.TempDir(), "OVMF_CODE_4M.fd")}.withDefaults()
	f := byCheck(o.qemuChecks(ctx))["firmware-uefi"]
	if f.Status != Fail || !strings.Contains(f.Fix, "apt-get install ovmf") {
		t.Errorf("missing OVMF: %s %q, fix %q; want a failure saying apt-get install ovmf", f.Status, f.Message, f.Fix)
	}

	o = Options{QEMU: "hearth-no-such-qemu"}.withDefaults()
	got = byCheck(o.qemuChecks(ctx))
	if f := got["qemu"]; f.Status != Fail || f.Fix != "apt-get install qemu-system-x86" {
		t.Errorf("missing QEMU: %s %q, fix %q", f.Status, f.Message, f.Fix)
	}
	if f := byCheck(o.kvm(ctx))["kvm"]; f.Status != Skipped {
		t.Errorf("kvm without QEMU: %s %q, want skipped", f.Status, f.Message)
	}
}

// TestQEMUBadROM gives QEMU a NIC whose option ROM does not exist, as on a
// machine without ipxe-qemu, and reads what it says.
func TestQEMUBadROM(t *testing.T) {
	needQEMU(t)
	o := Options{}.withDefaults()
	msg, err := o.tryQEMU(context.Background(), "-machine", "q35", "-device", "virtio-net-pci,romfile=hearth-no-such.rom")
	if err == nil {
		t.Fatal("QEMU started without its ROM")
	}
	if fix := firmwareFix(msg); !strings.Contains(fix, "ipxe-qemu") {
		t.Errorf("QEMU said %q; fix %q, want ipxe-qemu", msg, fix)
	}
	msg, err = o.tryQEMU(context.Background(), "-machine", "q35", "-bios", "hearth-no-such-bios.bin")
	if err == nil {
		t.Fatal("QEMU started without its BIOS")
	}
	if fix := firmwareFix(msg); !strings.Contains(fix, "seabios") {
		t.Errorf("QEMU said %q; fix %q, want seabios", msg, fix)
	}
}

func TestQEMUImg(t *testing.T) {
	needQEMU(t)
	dir := t.TempDir()
	got := byCheck(Options{}.withDefaults().qemuImg(context.Background(), filepath.Join(dir, "not-yet")))
	if f := got["qemu-img"]; f.Status != OK || !strings.Contains(f.Message, dir) {
		t.Errorf("qemu-img: %s %q, want ok in %s", f.Status, f.Message, dir)
	}
	// qemu-block-extra is one of the test peers (scripts/deps.sh).
	if f := got["rbd"]; f.Status != OK {
		t.Errorf("rbd: %s %q (is qemu-block-extra installed?)", f.Status, f.Message)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind in the data directory's parent: %v", entries)
	}
	got = byCheck(Options{QEMUImg: "hearth-no-such-qemu-img"}.withDefaults().qemuImg(context.Background(), dir))
	if f := got["qemu-img"]; f.Status != Fail || f.Fix != "apt-get install qemu-utils" {
		t.Errorf("missing qemu-img: %s %q, fix %q", f.Status, f.Message, f.Fix)
	}
}

func TestIPXE(t *testing.T) {
	dir := t.TempDir()
	f := byCheck(Options{IPXEDir: dir}.withDefaults().ipxe())["ipxe"]
	if f.Status != Fail || !strings.Contains(f.Message, "undionly.kpxe, ipxe.efi, snponly.efi") || !strings.Contains(f.Fix, "apt-get install ipxe") {
		t.Errorf("empty iPXE directory: %s %q, fix %q", f.Status, f.Message, f.Fix)
	}
	for _, name := range []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if f := byCheck(Options{IPXEDir: dir}.withDefaults().ipxe())["ipxe"]; f.Status != OK {
		t.Errorf("full iPXE directory: %s %q", f.Status, f.Message)
	}
}

// TestPorts holds a TCP and a UDP port and checks that each is reported
// taken, naming this process; a free one is free.
func TestPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	free := servertest.FreePort(t)
	comm, _ := os.ReadFile("/proc/self/comm")
	me := fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), os.Getpid())
	tcp := fmt.Sprintf("tcp/%d", l.Addr().(*net.TCPAddr).Port)
	udp := fmt.Sprintf("udp/%d", u.LocalAddr().(*net.UDPAddr).Port)
	got := byCheck(ports([]string{tcp, udp, fmt.Sprintf("tcp/%d", free)}))
	for _, p := range []string{tcp, udp} {
		f := got["port "+p]
		if f.Status != Fail || !strings.Contains(f.Message, "in use by "+me) || f.Fix == "" {
			t.Errorf("%s: %s %q (fix %q), want a failure naming %s", p, f.Status, f.Message, f.Fix, me)
		}
	}
	if f := got[fmt.Sprintf("port tcp/%d", free)]; f.Status != OK {
		t.Errorf("free port: %s %q", f.Status, f.Message)
	}
}

func TestDataDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, files ...string) string {
		d := filepath.Join(base, name)
		if err := os.Mkdir(d, mode); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(d, f), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		return d
	}
	file := filepath.Join(base, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		private bool
		want    Status
		fix     string
	}{
		{"private and used", mk("private", 0o700, "member"), true, OK, ""},
		{"open and used", mk("open", 0o755, "member"), true, Fail, "chmod 0700"},
		{"open and empty (the server makes it private)", mk("empty", 0o755), true, OK, ""},
		{"open and used, not private", mk("shared", 0o755, "x"), false, OK, ""},
		{"not yet there", filepath.Join(base, "new", "dir"), true, OK, ""},
		{"a file", file, true, Fail, "--data-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := byCheck(dataDir(tt.dir, tt.private, serverSpace))["data-dir"]
			if f.Status != tt.want || !strings.Contains(f.Fix, tt.fix) {
				t.Errorf("%s: %s %q (fix %q), want %s with %q", tt.dir, f.Status, f.Message, f.Fix, tt.want, tt.fix)
			}
		})
	}
	huge := space{warn: 1 << 62, fail: 1 << 61, why: "a test"}
	if f := byCheck(dataDir(base, false, huge))["disk-space"]; f.Status != Fail || !strings.Contains(f.Message, "a test") {
		t.Errorf("disk too small: %s %q", f.Status, f.Message)
	}
	if f := byCheck(dataDir(base, false, space{}))["disk-space"]; f.Status != OK {
		t.Errorf("disk big enough: %s %q", f.Status, f.Message)
	}
}

// TestFsync measures the temporary directory's disk, however fast it is,
// and leaves nothing behind.
func TestFsync(t *testing.T) {
	dir := t.TempDir()
	f := fsyncLatency(context.Background(), dir)[0]
	if f.Status != OK && f.Status != Warn {
		t.Fatalf("%s %q", f.Status, f.Message)
	}
	if !strings.Contains(f.Message, "99th percentile") || !strings.Contains(f.Message, "samples") {
		t.Errorf("message %q does not report the measurement", f.Message)
	}
	if f.Status == Warn && f.Fix == "" {
		t.Errorf("a slow disk without a fix")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i
	}
	tests := []struct {
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{ms(5), 0.99, 5 * time.Millisecond},
		{ms(3, 1, 2), 0.5, 2 * time.Millisecond},
		{ms(hundred...), 0.99, 99 * time.Millisecond},
		{ms(hundred...), 0.5, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.in, tt.q); got != tt.want {
			t.Errorf("percentile(%v, %g) = %s, want %s", tt.in, tt.q, got, tt.want)
		}
	}
}

// TestReachServer asks a real server for its version: with its CA, with
// another CA, from the credentials a joined agent keeps, and where nothing
// listens.
func TestReachServer(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, env.Server.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	got := byCheck(Options{Server: env.Server.URL(), CAFile: ca}.reach(ctx, dir))
	if f := got["server"]; f.Status != OK || !strings.Contains(f.Message, "answers") {
		t.Errorf("reachable server: %s %q", f.Status, f.Message)
	}
	if f := got["clock-skew"]; f.Status != OK {
		t.Errorf("same machine's clocks: %s %q", f.Status, f.Message)
	}

	other := servertest.Start(t)
	otherCA := filepath.Join(dir, "other.crt")
	if err := os.WriteFile(otherCA, other.Server.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	f := byCheck(Options{Server: env.Server.URL(), CAFile: otherCA}.reach(ctx, dir))["server"]
	if f.Status != Fail || !strings.Contains(f.Fix, "--ca-file") {
		t.Errorf("another cluster's CA: %s %q, fix %q", f.Status, f.Message, f.Fix)
	}

	// A joined agent keeps the server and CA in credentials.json.
	agentDir := t.TempDir()
	creds, _ := json.Marshal(map[string]string{"server": env.Server.URL(), "ca": string(env.Server.CAPEM()), "token": "not read"})
	if err := os.WriteFile(filepath.Join(agentDir, "credentials.json"), creds, 0o600); err != nil {
		t.Fatal(err)
	}
	if f := byCheck(Options{}.reach(ctx, agentDir))["server"]; f.Status != OK {
		t.Errorf("from credentials.json: %s %q", f.Status, f.Message)
	}

	if f := byCheck(Options{}.reach(ctx, t.TempDir()))["server"]; f.Status != Skipped || !strings.Contains(f.Fix, "--server") {
		t.Errorf("no server known: %s %q, fix %q", f.Status, f.Message, f.Fix)
	}

	closed := fmt.Sprintf("https://127.0.0.1:%d", servertest.FreePort(t))
	f = byCheck(Options{Server: closed, CAFile: ca}.reach(ctx, dir))["server"]
	if f.Status != Fail || !strings.Contains(f.Fix, "nothing listens") {
		t.Errorf("nothing listening: %s %q, fix %q", f.Status, f.Message, f.Fix)
	}
}

func TestJudgeSkew(t *testing.T) {
	tests := []struct {
		skew time.Duration
		want Status
		word string
	}{
		{0, OK, ""},
		{3 * time.Second, OK, ""},
		{-3 * time.Second, OK, ""},
		{40 * time.Second, Warn, "behind"},
		{-2 * time.Minute, Warn, "ahead of"},
	}
	for _, tt := range tests {
		f := judgeSkew(tt.skew, time.Millisecond)
		if f.Status != tt.want || !strings.Contains(f.Message, tt.word) {
			t.Errorf("skew %s: %s %q, want %s saying %q", tt.skew, f.Status, f.Message, tt.want, tt.word)
		}
	}
}

// TestRunEveryRole runs every role's checks on this machine, which the
// test peers (scripts/deps.sh test) equip for all of them, with data
// directories and ports of the test's own: nothing fails, every role has
// its checks, and a check two roles share runs once.
func TestRunEveryRole(t *testing.T) {
	needRoot(t)
	needQEMU(t)
	base := t.TempDir()
	port := func(proto string) string { return fmt.Sprintf("%s/%d", proto, servertest.FreePort(t)) }
	opts := Options{
		DataDirs: map[Role]string{Server: filepath.Join(base, "server"), Agent: filepath.Join(base, "agent"),
			Boot: filepath.Join(base, "boot"), Sandbox: filepath.Join(base, "sandbox")},
		Ports: map[Role][]string{Server: {port("tcp"), port("tcp")}, Agent: {port("tcp")}, Boot: {port("udp"), port("tcp")}},
	}
	rep := Run(context.Background(), opts)
	want := map[Role][]string{
		Server:  {"data-dir", "disk-space", "fsync", "clock"},
		Agent:   {"network-namespaces", "vxlan", "tun", "nftables", "bridge-netfilter", "kvm", "qemu", "firmware-bios", "firmware-uefi", "qemu-img", "rbd", "data-dir", "clock", "server"},
		Boot:    {"ipxe", "data-dir", "clock", "server"},
		Sandbox: {"network-namespaces", "bridge", "kvm", "qemu", "ipxe", "test-guest", "data-dir"},
	}
	for role, checks := range want {
		got := byCheck(rep.Findings[role])
		for _, c := range checks {
			if _, ok := got[c]; !ok {
				t.Errorf("%s: no %s check", role, c)
			}
		}
	}
	for _, f := range rep.All() {
		if f.Status == Fail {
			t.Errorf("%s failed on the test machine: %s (fix: %s)", f.Check, f.Message, f.Fix)
		}
		if f.Condition == "" {
			t.Errorf("%s has no condition type", f.Check)
		}
		if f.Status != OK && f.Status != Skipped && f.Fix == "" {
			t.Errorf("%s is %s without a fix: %s", f.Check, f.Status, f.Message)
		}
	}
	// Shared checks run once: the agent's and the sandbox's kernel
	// findings are the same values.
	if a, s := byCheck(rep.Findings[Agent])["kvm"], byCheck(rep.Findings[Sandbox])["kvm"]; a != s {
		t.Errorf("kvm differs between roles: %+v, %+v", a, s)
	}
	t.Logf("%s", rep.Summary())

	skipped := Run(context.Background(), Options{Roles: []Role{Boot}, Skip: []string{"server", "clock"},
		DataDirs: opts.DataDirs, Ports: opts.Ports})
	for _, f := range skipped.All() {
		if f.Check == "server" || f.Check == "clock" {
			t.Errorf("skipped check %s reported", f.Check)
		}
	}
}

// TestReportJSON: a report read back from `hearth doctor -o json` is the
// report (the package test reads it so).
func TestReportJSON(t *testing.T) {
	rep := Report{Roles: []Role{Agent}, Findings: map[Role][]Finding{Agent: {
		{Check: "kvm", Condition: condKVM, Status: Warn, Message: "m", Fix: "f"},
		{Check: "qemu", Condition: condQEMU, Status: OK, Message: "q"},
		{Check: "x", Condition: condQEMU, Status: Fail, Message: "x"},
		{Check: "y", Condition: condQEMU, Status: Skipped, Message: "y"},
	}}}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if fmt.Sprint(back) != fmt.Sprint(rep) {
		t.Errorf("got %+v\nwant %+v", back, rep)
	}
	if !strings.Contains(string(b), `"status":"warn"`) {
		t.Errorf("statuses are not named in JSON: %s", b)
	}
}
