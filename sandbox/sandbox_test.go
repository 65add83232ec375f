package sandbox_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/sandbox"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/testguest"
)

// The test binary is also the hearth binary the sandbox runs: given a
// command instead of test flags, it runs it. It knows `sandbox exec-in`
// and `server` (the real code behind them, without the rest of the CLI, so
// these tests do not depend on every other command building) and the
// stand-ins used below.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		os.Exit(helperMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func helperMain(args []string) int {
	switch args[0] {
	case "test-listen":
		return listenMain(args[1])
	case "test-sleep":
		fmt.Println("sleeping")
		time.Sleep(time.Hour)
		return 0
	case "test-router":
		// Like an agent starting a process in a namespace of its own (a
		// tenant network's router): it starts test-sleep-unshared and
		// says its pid.
		exe, _ := os.Executable()
		child := exec.Command(exe, "test-sleep-unshared")
		out, _ := child.StdoutPipe()
		if err := child.Start(); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != "unshared" {
			fmt.Println("error:", line)
			return 1
		}
		fmt.Println(child.Process.Pid)
		time.Sleep(time.Hour)
		return 0
	case "test-sleep-unshared":
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("unshared")
		time.Sleep(time.Hour)
		return 0
	case "test-enter":
		// Enters a network namespace without a mount namespace of its own,
		// as nsenter would, then sleeps.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+args[1], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
		}
		if err != nil {
			fmt.Println(err)
			return 1
		}
		exe, _ := os.Executable()
		fmt.Println(syscall.Exec(exe, []string{exe, "test-sleep"}, os.Environ()))
		return 1
	case "test-agent":
		return fakeAgentMain(args[1:])
	case "test-failing-agent":
		fmt.Println("the stand-in agent gives up at once")
		return 3
	case "server":
		return serverMain(args[1:])
	case "sandbox":
		// sandbox exec-in NETNS -- COMMAND…, as cli/sandbox.go parses it.
		if len(args) >= 5 && args[1] == "exec-in" && args[3] == "--" {
			fmt.Fprintln(os.Stderr, sandbox.ExecIn(args[2], args[4:]))
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "the test binary does not know %q\n", args)
	return 2
}

// serverMain runs the control plane with the flags the sandbox gives
// `hearth server`.
func serverMain(args []string) int {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	var cfg server.Config
	fs.StringVar(&cfg.DataDir, "data-dir", "", "")
	fs.StringVar(&cfg.Listen, "listen", "", "")
	fs.StringVar(&cfg.Etcd.ClientURL, "etcd-client-url", "", "")
	fs.StringVar(&cfg.Etcd.PeerURL, "etcd-peer-url", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s, err := server.Start(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	<-ctx.Done()
	s.Close()
	return 0
}

// listenMain accepts TCP connections on addr and tells each caller which
// interfaces its /sys shows, then closes.
func listenMain(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		entries, _ := os.ReadDir("/sys/class/net")
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		fmt.Fprintf(c, "interfaces %s\n", strings.Join(names, " "))
		c.Close()
	}
}

// fakeAgentMain stands in for `hearth agent` (same flags): it joins,
// registers its Host and keeps it Ready. It refuses to run outside its
// host's namespace, so a Ready Host proves where it ran.
func fakeAgentMain(args []string) int {
	fs := flag.NewFlagSet("test-agent", flag.ContinueOnError)
	srv := fs.String("server", "", "")
	token := fs.String("join-token", "", "")
	caFile := fs.String("ca-file", "", "")
	name := fs.String("name", "", "")
	fs.String("data-dir", "", "")
	address := fs.String("address", "", "")
	site := fs.String("site", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Printf(format+"\n", a...)
		return 1
	}
	if !hasAddress(*address) {
		return fail("%s is not an address of this namespace", *address)
	}
	ca, err := os.ReadFile(*caFile)
	if err != nil {
		return fail("%v", err)
	}
	ctx := context.Background()
	jc, err := client.New(&client.Context{Server: *srv, Token: *token, CertificateAuthority: string(ca)})
	if err != nil {
		return fail("%v", err)
	}
	var jr server.JoinResponse
	if err := jc.Do(ctx, http.MethodPost, api.PathPrefix+"/join", server.JoinRequest{Host: *name}, &jr); err != nil {
		return fail("join: %v", err)
	}
	c, err := client.New(&client.Context{Server: *srv, Token: jr.Token, CertificateAuthority: string(ca)})
	if err != nil {
		return fail("%v", err)
	}
	h := &api.Host{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Host"},
		Metadata: api.ObjectMeta{Name: *name},
		Spec:     api.HostSpec{Site: *site, Address: *address}}
	if _, err := c.Create(ctx, h); err != nil {
		return fail("registering: %v", err)
	}
	for {
		status := map[string]any{"status": map[string]any{"phase": api.HostReady, "lastHeartbeat": time.Now().UTC()}}
		if _, err := c.Patch(ctx, "Host", "", *name, status, true); err != nil {
			fmt.Println("heartbeat:", err)
		}
		time.Sleep(5 * time.Second)
	}
}

func hasAddress(addr string) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == addr {
			return true
		}
	}
	return false
}

// testConfig is a sandbox of two hosts with names and an underlay of its
// own (198.18.0.0/15 is reserved for benchmarks, so it is nobody's LAN),
// so a test never meets a real sandbox or another test.
func testConfig(t *testing.T) sandbox.Config {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox makes network namespaces and links: run the tests as root")
	}
	b := make([]byte, 3)
	rand.Read(b)
	third, _ := rand.Int(rand.Reader, big.NewInt(256))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return sandbox.Config{
		Dir:        t.TempDir(),
		Hosts:      2,
		Prefix:     "hst" + hex.EncodeToString(b),
		Underlay:   netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", third.Int64())),
		Executable: exe,
		Progress:   testWriter{t},
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// down removes the sandbox and fails the test if that fails.
func down(t *testing.T, cfg sandbox.Config) {
	t.Helper()
	if err := sandbox.Down(context.Background(), cfg); err != nil {
		t.Errorf("Down: %v", err)
	}
}

// startIn runs a stand-in inside a namespace, the way the sandbox starts
// agents, and returns it once it has said its first line.
func startIn(t *testing.T, s *sandbox.Sandbox, netnsName string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	return start(t, s.Command(netnsName, append([]string{s.Executable()}, args...)...))
}

func start(t *testing.T, cmd *exec.Cmd) (*exec.Cmd, string) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testWriter{t}
	// Its children may hold its stderr: do not wait for them.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	return cmd, strings.TrimSpace(line)
}

// startRoot runs the test binary with args in the root namespace and
// returns it once it has said its first line.
func startRoot(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	return start(t, cmd)
}

func readFrom(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

type routeKey struct {
	table int
	dst   string
	dev   int
}

func rootRoutes(t *testing.T, family int) map[routeKey]bool {
	t.Helper()
	rs, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	out := map[routeKey]bool{}
	for _, r := range rs {
		dst := "default"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		out[routeKey{r.Table, dst, r.LinkIndex}] = true
	}
	return out
}

func added(before, after map[routeKey]bool) []routeKey {
	var out []routeKey
	for k := range after {
		if !before[k] {
			out = append(out, k)
		}
	}
	return out
}

func netnsNames(t *testing.T, prefix string) []string {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func procGone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && strings.HasPrefix(string(data[i+1:]), " Z")
}

func netnsOf(pid int) string {
	l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	return l
}

func readSysctl(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// eventually polls cond for up to 10s.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestNetworkAndDown(t *testing.T) {
	cfg := testConfig(t)
	ctl := cfg.Prefix + "-ctl"
	forwarding := readSysctl(t, "/proc/sys/net/ipv4/ip_forward")
	v4Before, v6Before := rootRoutes(t, netlink.FAMILY_V4), rootRoutes(t, netlink.FAMILY_V6)

	s, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	if err := s.BuildNetwork(); err != nil {
		t.Fatalf("BuildNetwork: %v", err)
	}
	if _, err := sandbox.New(cfg); err == nil || !strings.Contains(err.Error(), "a sandbox is already up in "+cfg.Dir) {
		t.Errorf("New on an existing sandbox: got %v, want an error saying a sandbox is already up", err)
	}

	want := []string{cfg.Prefix + "-underlay", cfg.Prefix + "-h1", cfg.Prefix + "-h2"}
	if got := s.State.Namespaces; !slices.Equal(got, want) {
		t.Errorf("recorded namespaces: got %v, want %v", got, want)
	}
	st, err := sandbox.LoadState(cfg.Dir)
	if err != nil || !slices.Equal(st.Namespaces, want) || !slices.Equal(st.RootLinks, []string{ctl}) {
		t.Errorf("sandbox.json: got %+v, %v; want namespaces %v and root link %s", st, err, want, ctl)
	}
	h1, h2 := s.State.Hosts[0], s.State.Hosts[1]
	if h1.Address != addrPlus(cfg.Underlay, 11) || h2.Address != addrPlus(cfg.Underlay, 12) {
		t.Errorf("host addresses: got %s, %s; want .11 and .12 of %s", h1.Address, h2.Address, cfg.Underlay)
	}

	// Host to host, across the underlay bridge: h1 reaches a listener that
	// exec-in started in h2, and that listener's /sys is h2's.
	_, said := startIn(t, s, h2.Netns, "test-listen", h2.Address+":7777")
	if said != "listening" {
		t.Fatalf("listener in %s: %s", h2.Netns, said)
	}
	var got string
	err = sandbox.InNetns(h1.Netns, func() (err error) {
		got, err = readFrom(h2.Address + ":7777")
		return err
	})
	if err != nil || got != "interfaces eth0 lo" {
		t.Errorf("from %s to %s:7777: got %q, %v; want %q", h1.Name, h2.Address, got, err, "interfaces eth0 lo")
	}

	// The root namespace reaches a host through its veth.
	if got, err := readFrom(h2.Address + ":7777"); err != nil || got == "" {
		t.Errorf("from the root namespace to %s:7777: got %q, %v", h2.Address, got, err)
	}

	// A host reaches nothing beyond the underlay: it has no route there.
	err = sandbox.InNetns(h1.Netns, func() error {
		c, err := net.DialTimeout("udp", "192.0.2.1:53", time.Second)
		if err == nil {
			_, err = c.Write([]byte("x"))
			c.Close()
		}
		return err
	})
	if !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("from %s to 192.0.2.1: got %v, want network is unreachable", h1.Name, err)
	}

	// The root namespace gained the connected route of the underlay and
	// nothing else: no IPv6 route, no default route, no forwarding.
	link, err := netlink.LinkByName(ctl)
	if err != nil {
		t.Fatal(err)
	}
	v4 := added(v4Before, rootRoutes(t, netlink.FAMILY_V4))
	var main []routeKey
	for _, r := range v4 {
		if r.dev != link.Attrs().Index {
			t.Errorf("new route %+v is not on %s", r, ctl)
		}
		if r.table == unix.RT_TABLE_MAIN {
			main = append(main, r)
		}
	}
	if len(main) != 1 || main[0].dst != cfg.Underlay.String() {
		t.Errorf("new routes in the main table: got %+v, want only %s dev %s", main, cfg.Underlay, ctl)
	}
	if v6 := added(v6Before, rootRoutes(t, netlink.FAMILY_V6)); len(v6) > 0 {
		t.Errorf("new IPv6 routes in the root namespace: %+v", v6)
	}
	if got := readSysctl(t, "/proc/sys/net/ipv4/ip_forward"); got != forwarding {
		t.Errorf("ip_forward: got %s, was %s", got, forwarding)
	}

	// Processes the record knows nothing of, as VMs would be: one in h1,
	// one in a namespace h2 made itself.
	vm, _ := startIn(t, s, h1.Netns, "test-sleep")
	router, said := startIn(t, s, h2.Netns, "test-router")
	nested, err := strconv.Atoi(said)
	if err != nil {
		t.Fatalf("test-router: %s", said)
	}
	if a, b := netnsOf(router.Process.Pid), netnsOf(nested); a == b || a == "" || b == "" {
		t.Fatalf("the router's child is not in a namespace of its own: %s, %s", a, b)
	}
	// One that entered h1 from the root's mount namespace, and a bystander
	// in that mount namespace: down stops the first, not the second.
	entered, _ := startRoot(t, "test-enter", h1.Netns)
	bystander, _ := startRoot(t, "test-sleep")
	if err := os.WriteFile(filepath.Join(cfg.Dir, "keep-me"), []byte("not the sandbox's"), 0o644); err != nil {
		t.Fatal(err)
	}

	down(t, cfg)

	for _, pid := range []int{vm.Process.Pid, router.Process.Pid, nested, entered.Process.Pid} {
		if !eventually(func() bool { return procGone(pid) }) {
			t.Errorf("process %d inside the sandbox survived down", pid)
		}
	}
	if procGone(bystander.Process.Pid) {
		t.Errorf("down stopped a process outside the sandbox (pid %d), which shares its mount namespace with one that entered %s", bystander.Process.Pid, h1.Netns)
	}
	if ns := netnsNames(t, cfg.Prefix); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	if _, err := netlink.LinkByName(ctl); err == nil {
		t.Errorf("link %s left after down", ctl)
	}
	if !eventually(func() bool { return len(added(v4Before, rootRoutes(t, netlink.FAMILY_V4))) == 0 }) {
		t.Errorf("routes left after down: %+v", added(v4Before, rootRoutes(t, netlink.FAMILY_V4)))
	}
	entries, _ := os.ReadDir(cfg.Dir)
	if len(entries) != 1 || entries[0].Name() != "keep-me" {
		t.Errorf("files in %s after down: got %v, want only keep-me (the sandbox did not make it)", cfg.Dir, entries)
	}
	// Down again does nothing, and fails at nothing.
	down(t, cfg)
}

func addrPlus(p netip.Prefix, n int) string {
	a := p.Addr()
	for range n {
		a = a.Next()
	}
	return a.String()
}

func TestDownWithoutRecord(t *testing.T) {
	cfg := testConfig(t)
	s, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	if err := s.BuildNetwork(); err != nil {
		t.Fatalf("BuildNetwork: %v", err)
	}
	vm, _ := startIn(t, s, s.State.Hosts[1].Netns, "test-sleep")
	// A process in a namespace h1 made, whose parent (the agent, say)
	// died: nothing of it is left in h1's namespace.
	router, said := startIn(t, s, s.State.Hosts[0].Netns, "test-router")
	orphan, err := strconv.Atoi(said)
	if err != nil {
		t.Fatalf("test-router: %s", said)
	}
	router.Process.Kill()
	router.Wait()
	// A record cut short by a crash is as good as none.
	if err := os.WriteFile(filepath.Join(cfg.Dir, "sandbox.json"), []byte(`{"dir": "`), 0o644); err != nil {
		t.Fatal(err)
	}
	down(t, cfg)
	for _, pid := range []int{vm.Process.Pid, orphan} {
		if !eventually(func() bool { return procGone(pid) }) {
			t.Errorf("process %d inside the sandbox survived down", pid)
		}
	}
	if ns := netnsNames(t, cfg.Prefix); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	if _, err := netlink.LinkByName(cfg.Prefix + "-ctl"); err == nil {
		t.Errorf("link %s-ctl left after down", cfg.Prefix)
	}
	if entries, _ := os.ReadDir(cfg.Dir); len(entries) > 0 {
		t.Errorf("files left in %s: %v", cfg.Dir, entries)
	}
}

func TestUpWithStandInAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	cfg := testConfig(t)
	cfg.Port = freePort(t)
	cfg.ReadyTimeout = 60 * time.Second
	cfg.AgentCommand = func(h sandbox.Host, j sandbox.Join) []string {
		argv := sandbox.DefaultAgentCommand(cfg.Executable)(h, j)
		argv[1] = "test-agent"
		return argv
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	s, err := sandbox.Up(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	var out strings.Builder
	s.PrintSummary(&out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	wantLast := "export HEARTH_CONFIG=" + filepath.Join(cfg.Dir, "server", "admin.conf")
	if lines[len(lines)-1] != wantLast {
		t.Errorf("last line of the summary: got %q, want %q", lines[len(lines)-1], wantLast)
	}
	t.Logf("summary:\n%s", out.String())

	c, err := client.FromConfig(filepath.Join(cfg.Dir, "server", "admin.conf"), "")
	if err != nil {
		t.Fatal(err)
	}
	hosts, _, err := c.List(context.Background(), "Host", "", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range hosts {
		h := o.(*api.Host)
		got = append(got, fmt.Sprintf("%s %s %s %s", h.Metadata.Name, h.Spec.Address, h.Spec.Site, h.Status.Phase))
	}
	want := []string{
		"h1 " + addrPlus(cfg.Underlay, 11) + " sandbox Ready",
		"h2 " + addrPlus(cfg.Underlay, 12) + " sandbox Ready",
	}
	if !slices.Equal(got, want) {
		t.Errorf("hosts: got %q, want %q", got, want)
	}
	var status strings.Builder
	if err := sandbox.PrintStatus(context.Background(), &status, cfg.Dir); err != nil {
		t.Errorf("PrintStatus: %v", err)
	}
	t.Logf("status:\n%s", status.String())
	if !strings.Contains(status.String(), "answering") || strings.Count(status.String(), "Host Ready") != 2 {
		t.Errorf("status does not show the server answering and two Ready hosts:\n%s", status.String())
	}
	if _, err := sandbox.Up(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "a sandbox is already up in "+cfg.Dir+"; run hearth sandbox down") {
		t.Errorf("Up again: got %v, want an error saying a sandbox is already up", err)
	}

	serverPID := s.State.Server.PID
	agents := []int{s.State.Hosts[0].Agent.PID, s.State.Hosts[1].Agent.PID}
	down(t, cfg)
	for _, pid := range append(agents, serverPID) {
		if !procGone(pid) {
			t.Errorf("process %d survived down", pid)
		}
	}
	if ns := netnsNames(t, cfg.Prefix); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	if entries, _ := os.ReadDir(cfg.Dir); len(entries) > 0 {
		t.Errorf("files left in %s: %v", cfg.Dir, entries)
	}
}

func TestUpReportsAFailingAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	cfg := testConfig(t)
	cfg.Hosts = 1
	cfg.Port = freePort(t)
	cfg.AgentCommand = func(h sandbox.Host, j sandbox.Join) []string {
		return []string{cfg.Executable, "test-failing-agent"}
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	_, err := sandbox.Up(context.Background(), cfg)
	log := filepath.Join(cfg.Dir, "h1", "agent.log")
	for _, want := range []string{
		"sandbox up failed waiting for every host to be Ready",
		"the agent of h1 exited; the end of " + log,
		"the stand-in agent gives up at once",
		"hearth sandbox down --dir " + cfg.Dir + " --prefix " + cfg.Prefix,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Up with an agent that exits: got %v, want an error containing %q", err, want)
		}
	}
	down(t, cfg)
	if ns := netnsNames(t, cfg.Prefix); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestBuildTestGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("may build the test guest from Debian packages")
	}
	cfg := testConfig(t)
	s, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	if err := s.BuildTestGuest(context.Background()); err != nil {
		t.Fatalf("BuildTestGuest: %v", err)
	}
	g := s.State.TestGuest
	want := &sandbox.Guest{Kernel: filepath.Join(cfg.Dir, "testguest", "vmlinuz"), Initrd: filepath.Join(cfg.Dir, "testguest", "initrd.img")}
	if g == nil || *g != *want {
		t.Fatalf("test guest: got %+v, want %+v", g, want)
	}
	for _, p := range []string{g.Kernel, g.Initrd} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v, want a file", p, err)
		}
	}
	down(t, cfg)
	if _, err := os.Stat(filepath.Join(cfg.Dir, "testguest")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s/testguest after down: %v, want it gone", cfg.Dir, err)
	}
	// The sandbox's copies may be hard links into the build cache: the
	// cache keeps its own.
	cache, err := testguest.Build(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cache.Kernel, cache.Initrd} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the build cache after down: %v", err)
		}
	}
}
