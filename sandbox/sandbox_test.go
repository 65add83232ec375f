package sandbox_test

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
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
	"hearth.dev/hearth/netns"
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
	case "test-owned-sandbox":
		return ownedSandboxMain(args[1:])
	case "test-agent":
		return fakeAgentMain(args[1:])
	case "test-failing-agent":
		fmt.Println("the stand-in agent gives up at once")
		return 3
	case "test-boot":
		return fakeBootMain(args[1:])
	case "test-failing-boot":
		fmt.Println("the stand-in boot service gives up at once")
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

// fakeAgentMain stands in for `hearth agent` (same flags): it joins
// (which registers its Host) and keeps its Host Ready. It refuses to run outside its
// host's namespace, so a Ready Host proves where it ran.
func fakeAgentMain(args []string) int {
	fs := flag.NewFlagSet("test-agent", flag.ContinueOnError)
	srv := fs.String("server", "", "")
	tokenFile := fs.String("join-token-file", "", "")
	caFile := fs.String("ca-file", "", "")
	name := fs.String("name", "", "")
	fs.String("data-dir", "", "")
	address := fs.String("address", "", "")
	fs.String("underlay-device", "", "")
	fs.String("external-interface", "", "")
	fs.String("metrics-listen", "", "")
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
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fail("%v", err)
	}
	ctx := context.Background()
	jc, err := client.New(&client.Context{Server: *srv, Token: strings.TrimSpace(string(token)), CertificateAuthority: string(ca)})
	if err != nil {
		return fail("%v", err)
	}
	jr, err := jc.Join(ctx, api.JoinRequest{Host: *name, Address: *address})
	if err != nil {
		return fail("join: %v", err)
	}
	c, err := client.New(&client.Context{Server: *srv, Token: jr.Token, CertificateAuthority: string(ca)})
	if err != nil {
		return fail("%v", err)
	}
	for {
		status := map[string]any{"status": map[string]any{"phase": api.HostReady, "lastHeartbeat": time.Now().UTC()}}
		if _, err := c.Patch(ctx, "Host", "", *name, status, true); err != nil {
			fmt.Println("heartbeat:", err)
		}
		time.Sleep(5 * time.Second)
	}
}

// fakeBootMain stands in for `hearth boot` (same flags): it checks that
// it runs where the sandbox says, with both networks, and serves HTTP on
// --http-listen.
func fakeBootMain(args []string) int {
	fs := flag.NewFlagSet("test-boot", flag.ContinueOnError)
	srv := fs.String("server", "", "")
	tokenFile := fs.String("join-token-file", "", "")
	caFile := fs.String("ca-file", "", "")
	fs.String("name", "", "")
	fs.String("data-dir", "", "")
	iface := fs.String("interface", "", "")
	address := fs.String("address", "", "")
	fs.String("dhcp-mode", "", "")
	fs.String("pool-start", "", "")
	fs.String("pool-end", "", "")
	httpListen := fs.String("http-listen", "", "")
	fs.String("site", "", "")
	fs.String("metrics-listen", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !hasAddress(*address) {
		fmt.Printf("%s is not an address of this namespace\n", *address)
		return 1
	}
	if _, err := net.InterfaceByName(*iface); err != nil {
		fmt.Printf("interface %s: %v\n", *iface, err)
		return 1
	}
	for _, f := range []string{*caFile, *tokenFile} {
		if _, err := os.Stat(f); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	u, err := url.Parse(*srv)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if c, err := net.DialTimeout("tcp", u.Host, 5*time.Second); err != nil {
		fmt.Printf("the server at %s: %v\n", u.Host, err)
		return 1
	} else {
		c.Close()
	}
	fmt.Println("the stand-in boot service serves", *httpListen)
	if err := http.ListenAndServe(*httpListen, http.NotFoundHandler()); err != nil {
		fmt.Println(err)
	}
	return 1
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

// testConfig is a sandbox of two hosts with names, an underlay and a
// provisioning network of its own (198.18.0.0/15 is reserved for
// benchmarks, so it is nobody's LAN), so a test never meets a real sandbox
// or another test.
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
		Dir:          t.TempDir(),
		Hosts:        2,
		Prefix:       "hst" + hex.EncodeToString(b),
		Underlay:     netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", third.Int64())),
		Provisioning: netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", third.Int64())),
		Executable:   exe,
		Progress:     testWriter{t},
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

	want := []string{cfg.Prefix + "-underlay", cfg.Prefix + "-h1", cfg.Prefix + "-h2", cfg.Prefix + "-internet", cfg.Prefix + "-lan", cfg.Prefix + "-boot"}
	if got := s.State.Namespaces; !slices.Equal(got, want) {
		t.Errorf("recorded namespaces: got %v, want %v", got, want)
	}
	st, err := sandbox.LoadState(cfg.Dir)
	if err != nil || !slices.Equal(st.Namespaces, want) || !slices.Equal(st.RootLinks, []string{ctl}) {
		t.Errorf("sandbox.json: got %+v, %v; want namespaces %v and root link %s", st, err, want, ctl)
	}
	// The internet has IPv6: ::1 of its link, and the range it
	// delegates routed on-link towards the hosts.
	if in := s.State.Internet; in == nil || in.Gateway6 != "fd68:172:31:253::1" || in.Routed6 != sandbox.DefaultRouted6CIDR {
		t.Errorf("the internet's IPv6: %+v, want fd68:172:31:253::1 routing %s", in, sandbox.DefaultRouted6CIDR)
	}
	err = netns.DoNamed(cfg.Prefix+"-internet", func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == sandbox.DefaultRouted6CIDR && r.Gw == nil {
				return nil
			}
		}
		return fmt.Errorf("no on-link route to %s in %v", sandbox.DefaultRouted6CIDR, routes)
	})
	if err != nil {
		t.Errorf("the internet: %v", err)
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
	err = netns.DoNamed(h1.Netns, func() (err error) {
		got, err = readFrom(h2.Address + ":7777")
		return err
	})
	// Its interfaces: the underlay's eth0, and ext0 with its uplink to
	// the sandbox's internet.
	if want := "interfaces eth0 ext0 lo uplink"; err != nil || got != want {
		t.Errorf("from %s to %s:7777: got %q, %v; want %q", h1.Name, h2.Address, got, err, want)
	}

	// The root namespace reaches a host through its veth.
	if got, err := readFrom(h2.Address + ":7777"); err != nil || got == "" {
		t.Errorf("from the root namespace to %s:7777: got %q, %v", h2.Address, got, err)
	}

	// A host reaches nothing beyond the underlay: it has no route there.
	err = netns.DoNamed(h1.Netns, func() error {
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

	checkProvisioning(t, cfg, s)

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

// checkProvisioning checks the provisioning network BuildNetwork made:
// prov0 in PREFIX-lan, PREFIX-boot on it at .2 and on the underlay at .9,
// reaching the root's .1, not forwarding, and unreachable from the hosts.
func checkProvisioning(t *testing.T, cfg sandbox.Config, s *sandbox.Sandbox) {
	t.Helper()
	p := s.State.Provisioning
	want := sandbox.Provisioning{
		CIDR:                cfg.Provisioning.String(),
		Netns:               cfg.Prefix + "-lan",
		Bridge:              "prov0",
		BootNetns:           cfg.Prefix + "-boot",
		BootInterface:       "prov",
		BootAddress:         addrPlus(cfg.Provisioning, 2),
		BootUnderlayLink:    "underlay",
		BootUnderlayAddress: addrPlus(cfg.Underlay, 9),
		BootMetrics:         addrPlus(cfg.Underlay, 9) + ":9465",
		DHCPMode:            "full",
		Site:                cmp.Or(cfg.Site, sandbox.DefaultSite),
		PoolStart:           addrPlus(cfg.Provisioning, 100),
		PoolEnd:             addrPlus(cfg.Provisioning, 199),
		HTTPListen:          addrPlus(cfg.Provisioning, 2) + ":8080",
		BootDir:             filepath.Join(cfg.Dir, "boot"),
	}
	if p == nil || *p != want {
		t.Fatalf("provisioning: got %+v, want %+v", p, want)
	}
	if st, err := sandbox.LoadState(cfg.Dir); err != nil || st.Provisioning == nil || *st.Provisioning != want {
		t.Errorf("sandbox.json's provisioning: got %+v, %v", st.Provisioning, err)
	}
	var bridge string
	var ports []string
	err := netns.DoNamed(p.Netns, func() error {
		l, err := netlink.LinkByName("prov0")
		if err != nil {
			return err
		}
		bridge = l.Type()
		links, err := netlink.LinkList()
		for _, o := range links {
			if o.Attrs().MasterIndex == l.Attrs().Index {
				ports = append(ports, o.Attrs().Name)
			}
		}
		return err
	})
	if err != nil || bridge != "bridge" || !slices.Equal(ports, []string{"boot"}) {
		t.Errorf("prov0 in %s: %s with ports %v, %v; want a bridge with port boot", p.Netns, bridge, ports, err)
	}
	var addrs []string
	err = netns.DoNamed(p.BootNetns, func() error {
		for _, name := range []string{"prov", "underlay"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			as, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, a := range as {
				addrs = append(addrs, name+" "+a.IPNet.String())
			}
		}
		return nil
	})
	wantAddrs := []string{
		fmt.Sprintf("prov %s/24", p.BootAddress),
		fmt.Sprintf("underlay %s/24", p.BootUnderlayAddress),
	}
	if err != nil || !slices.Equal(addrs, wantAddrs) {
		t.Errorf("addresses in %s: got %v, %v; want %v", p.BootNetns, addrs, err, wantAddrs)
	}
	var forwarding []byte
	err = netns.DoNamed(p.BootNetns, func() (err error) {
		forwarding, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	})
	if err != nil || strings.TrimSpace(string(forwarding)) != "0" {
		t.Errorf("ip_forward in %s: %q, %v; want 0", p.BootNetns, forwarding, err)
	}

	// The boot service reaches the root namespace's .1, where the server
	// listens.
	ln, err := net.Listen("tcp", addrPlus(cfg.Underlay, 1)+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	err = netns.DoNamed(p.BootNetns, func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Errorf("from %s to the root namespace's %s: %v", p.BootNetns, ln.Addr(), err)
	}
	// A host does not reach the provisioning network: it has no route
	// there.
	err = netns.DoNamed(s.State.Hosts[0].Netns, func() error {
		c, err := net.DialTimeout("udp", p.BootAddress+":67", time.Second)
		if err == nil {
			_, err = c.Write([]byte("x"))
			c.Close()
		}
		return err
	})
	if !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("from %s to %s: got %v, want network is unreachable", s.State.Hosts[0].Name, p.BootAddress, err)
	}
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
	// The test binary has no `boot` command: Up goes on without one.
	cfg.BootService = true
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	s, err := sandbox.Up(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if p := s.State.Provisioning; p == nil || p.Boot != nil || !strings.Contains(p.BootSkipped, "has no boot command") {
		t.Errorf("provisioning: got %+v, want no boot service, skipped as the binary has no boot command", p)
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
	if !strings.Contains(status.String(), "answering") || strings.Count(status.String(), "Host Ready") != 2 || !strings.Contains(status.String(), "not started: ") {
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

func TestUpWithStandInBootService(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	cfg := testConfig(t)
	cfg.Hosts = 1
	cfg.Port = freePort(t)
	cfg.ReadyTimeout = 60 * time.Second
	cfg.AgentCommand = func(h sandbox.Host, j sandbox.Join) []string {
		argv := sandbox.DefaultAgentCommand(cfg.Executable)(h, j)
		argv[1] = "test-agent"
		return argv
	}
	cfg.BootService = true
	cfg.BootCommand = func(p sandbox.Provisioning, j sandbox.Join) []string {
		argv := sandbox.DefaultBootCommand(cfg.Executable)(p, j)
		argv[1] = "test-boot"
		return argv
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	s, err := sandbox.Up(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	p := s.State.Provisioning
	if p == nil || p.Boot == nil || procGone(p.Boot.PID) {
		t.Fatalf("provisioning: got %+v, want a running boot service", p)
	}
	st, err := sandbox.LoadState(cfg.Dir)
	if err != nil || st.Provisioning == nil || st.Provisioning.Boot == nil || *st.Provisioning.Boot != *p.Boot {
		t.Errorf("sandbox.json's boot service: got %+v, %v; want %+v", st.Provisioning, err, p.Boot)
	}
	// The stand-in checked its addresses and the server; the HTTP it
	// serves is on the provisioning network only.
	if log, _ := os.ReadFile(p.BootLog()); !strings.Contains(string(log), "the stand-in boot service serves "+p.HTTPListen) {
		t.Errorf("%s: %q", p.BootLog(), log)
	}
	var summary strings.Builder
	s.PrintSummary(&summary)
	if !strings.Contains(summary.String(), "# boot service  "+p.BootAddress+"  netns "+p.BootNetns+", running") {
		t.Errorf("summary does not show the boot service running:\n%s", summary.String())
	}
	pid := p.Boot.PID
	down(t, cfg)
	if !eventually(func() bool { return procGone(pid) }) {
		t.Errorf("the boot service (pid %d) survived down", pid)
	}
	if ns := netnsNames(t, cfg.Prefix); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	if entries, _ := os.ReadDir(cfg.Dir); len(entries) > 0 {
		t.Errorf("files left in %s: %v", cfg.Dir, entries)
	}
}

func TestUpReportsAFailingBootService(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	cfg := testConfig(t)
	cfg.Hosts = 1
	cfg.Port = freePort(t)
	cfg.AgentCommand = func(h sandbox.Host, j sandbox.Join) []string {
		argv := sandbox.DefaultAgentCommand(cfg.Executable)(h, j)
		argv[1] = "test-agent"
		return argv
	}
	cfg.BootService = true
	cfg.BootCommand = func(p sandbox.Provisioning, j sandbox.Join) []string {
		return []string{cfg.Executable, "test-failing-boot"}
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	_, err := sandbox.Up(context.Background(), cfg)
	log := filepath.Join(cfg.Dir, "boot", "boot.log")
	for _, want := range []string{
		"sandbox up failed starting the boot service",
		"the boot service exited; the end of " + log,
		"the stand-in boot service gives up at once",
		"--boot-service=false",
		"hearth sandbox down --dir " + cfg.Dir + " --prefix " + cfg.Prefix,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Up with a boot service that exits: got %v, want an error containing %q", err, want)
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

// TestBuildDebianImage: the Debian image with cloud-init is linked into
// DIR/debian, where the agents may read it; down removes the sandbox's
// links, whether it finds its record or not, and the build cache keeps
// its own files.
func TestBuildDebianImage(t *testing.T) {
	if testing.Short() {
		t.Skip("may build the Debian image from Debian packages (minutes)")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("mmdebstrap is not installed (scripts/deps.sh test installs it): it builds the Debian image")
	}
	for _, record := range []bool{true, false} {
		t.Run(fmt.Sprintf("record=%v", record), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.DebianImage = true
			s, err := sandbox.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
			if err := s.BuildDebianImage(context.Background()); err != nil {
				t.Fatalf("BuildDebianImage: %v", err)
			}
			d := s.State.DebianImage
			dir := filepath.Join(cfg.Dir, "debian")
			want := &sandbox.DebianImage{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"), Disk: filepath.Join(dir, "disk.qcow2")}
			if d == nil || *d != *want {
				t.Fatalf("Debian image: got %+v, want %+v", d, want)
			}
			for _, p := range []string{d.Kernel, d.Initrd, d.Disk} {
				if st, err := os.Stat(p); err != nil || st.Size() == 0 {
					t.Errorf("%s: %v, want a file", p, err)
				}
			}
			if !record {
				os.Remove(filepath.Join(cfg.Dir, "sandbox.json"))
			}
			down(t, cfg)
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after down: %v, want it gone", dir, err)
			}
			cache, err := testguest.BuildDebian(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{cache.Kernel, cache.Initrd, cache.Disk} {
				if _, err := os.Stat(p); err != nil {
					t.Errorf("the build cache after down: %v", err)
				}
			}
		})
	}
}

// dhcpRequest is what a test reads from a DHCP client's packet.
type dhcpRequest struct {
	mac     string
	msgType byte   // option 53: 1 is DHCPDISCOVER
	arch    int    // option 93, -1 if absent
	iPXE    bool   // option 175 (iPXE's encapsulated options)
	vendor  string // option 60
}

// parseDHCPRequest reads a BOOTREQUEST from an Ethernet client.
func parseDHCPRequest(b []byte) (dhcpRequest, bool) {
	r := dhcpRequest{arch: -1}
	if len(b) < 240 || b[0] != 1 || b[1] != 1 || b[2] != 6 || string(b[236:240]) != "\x63\x82\x53\x63" {
		return r, false
	}
	r.mac = net.HardwareAddr(b[28:34]).String()
	for opts := b[240:]; len(opts) > 0 && opts[0] != 255; {
		if opts[0] == 0 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || len(opts) < 2+int(opts[1]) {
			break
		}
		code, val := opts[0], opts[2:2+int(opts[1])]
		switch {
		case code == 53 && len(val) == 1:
			r.msgType = val[0]
		case code == 93 && len(val) == 2:
			r.arch = int(val[0])<<8 | int(val[1])
		case code == 175:
			r.iPXE = true
		case code == 60:
			r.vendor = string(val)
		}
		opts = opts[2+len(val):]
	}
	return r, true
}

// listenDHCP listens on port 67 on the boot service's link in its
// namespace, as a DHCP server would, and sends every DHCP request that
// arrives to the returned channel.
func listenDHCP(t *testing.T, p *sandbox.Provisioning) <-chan dhcpRequest {
	t.Helper()
	var pc net.PacketConn
	err := netns.DoNamed(p.BootNetns, func() error {
		lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				for _, o := range []int{unix.SO_REUSEADDR, unix.SO_BROADCAST} {
					if serr == nil {
						serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o, 1)
					}
				}
				if serr == nil {
					serr = unix.BindToDevice(int(fd), p.BootInterface)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}}
		var err error
		pc, err = lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:67")
		return err
	})
	if err != nil {
		t.Fatalf("listening for DHCP in %s: %v", p.BootNetns, err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan dhcpRequest, 100)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(ch)
				return
			}
			if r, ok := parseDHCPRequest(buf[:n]); ok {
				select {
				case ch <- r:
				default:
				}
			}
		}
	}()
	return ch
}

// waitDiscover waits for a DHCPDISCOVER from each MAC, and returns the
// first of each.
func waitDiscover(t *testing.T, ch <-chan dhcpRequest, timeout time.Duration, macs ...string) map[string]dhcpRequest {
	t.Helper()
	got := map[string]dhcpRequest{}
	deadline := time.After(timeout)
	for len(got) < len(macs) {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatal("the DHCP listener stopped")
			}
			if _, seen := got[r.mac]; !seen && r.msgType == 1 && slices.Contains(macs, r.mac) {
				got[r.mac] = r
			}
		case <-deadline:
			t.Fatalf("after %v, DHCPDISCOVERs from %v of %v only", timeout, slices.Collect(maps.Keys(got)), macs)
		}
	}
	return got
}

func tapsIn(t *testing.T, netnsName string) map[string]string {
	t.Helper()
	taps := map[string]string{}
	err := netns.DoNamed(netnsName, func() error {
		links, err := netlink.LinkList()
		byIndex := map[int]string{}
		for _, l := range links {
			byIndex[l.Attrs().Index] = l.Attrs().Name
		}
		for _, l := range links {
			if l.Type() == "tuntap" {
				taps[l.Attrs().Name] = byIndex[l.Attrs().MasterIndex]
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return taps
}

// TestMachines adds a BIOS and a UEFI machine to the provisioning network
// and sees each send DHCPDISCOVER from its MAC, as its firmware
// network-boots; then removes one, then the sandbox.
func TestMachines(t *testing.T) {
	if testing.Short() {
		t.Skip("runs QEMU machines")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
	}
	uefi := true
	if _, err := os.Stat(sandbox.OVMFCode); err != nil {
		t.Logf("no UEFI machine: %v (Debian: ovmf)", err)
		uefi = false
	}
	cfg := testConfig(t)
	cfg.Hosts = 1
	s, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	if err := s.BuildNetwork(); err != nil {
		t.Fatalf("BuildNetwork: %v", err)
	}
	p := s.State.Provisioning
	discovers := listenDHCP(t, p)

	ctx := context.Background()
	bios, err := sandbox.AddMachine(ctx, sandbox.MachineConfig{Dir: cfg.Dir, Name: "pxe-bios"})
	if err != nil {
		t.Fatalf("AddMachine pxe-bios: %v", err)
	}
	want := sandbox.Machine{
		Name: "pxe-bios", MAC: sandbox.MachineMAC("pxe-bios"), Firmware: "bios", Memory: "512M", DiskSize: "8G",
		Tap: "m-pxe-bios", Dir: filepath.Join(cfg.Dir, "machines", "pxe-bios"), QEMU: bios.QEMU,
	}
	if *bios != want || bios.QEMU == nil || !strings.HasPrefix(bios.MAC, "52:54:00:") {
		t.Errorf("pxe-bios: got %+v, want %+v with a QEMU process", bios, want)
	}
	if _, err := sandbox.AddMachine(ctx, sandbox.MachineConfig{Dir: cfg.Dir, Name: "pxe-bios"}); err == nil || !strings.Contains(err.Error(), "machine pxe-bios exists already") {
		t.Errorf("AddMachine pxe-bios again: got %v, want an error saying it exists", err)
	}
	macs := []string{bios.MAC}
	var efi *sandbox.Machine
	if uefi {
		efi, err = sandbox.AddMachine(ctx, sandbox.MachineConfig{Dir: cfg.Dir, Name: "pxe-uefi", UEFI: true, DiskSize: "1G", Memory: "256M", MAC: "52:54:00:AB:CD:EF"})
		if err != nil {
			t.Fatalf("AddMachine pxe-uefi: %v", err)
		}
		if efi.MAC != "52:54:00:ab:cd:ef" || efi.Firmware != "uefi" || efi.DiskSize != "1G" {
			t.Errorf("pxe-uefi: got %+v", efi)
		}
		macs = append(macs, efi.MAC)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range []*sandbox.Machine{bios, efi} {
				if m != nil {
					b, _ := os.ReadFile(m.Console())
					q, _ := os.ReadFile(m.QEMU.Log)
					t.Logf("%s's console:\n%s\nQEMU said:\n%s", m.Name, b, q)
				}
			}
		}
	})

	// Everything is where the record says.
	st, err := sandbox.LoadState(cfg.Dir)
	if err != nil || len(st.Machines) != len(macs) || st.Machines[0].Name != bios.Name || st.Machines[0].QEMU == nil || *st.Machines[0].QEMU != *bios.QEMU {
		t.Errorf("sandbox.json's machines: got %+v, %v", st.Machines, err)
	}
	if got := netnsOf(bios.QEMU.PID); got != netnsOf(os.Getpid()) && got != "" {
		var lanNs string
		netns.DoNamed(p.Netns, func() error { lanNs, _ = os.Readlink("/proc/thread-self/ns/net"); return nil })
		if got != lanNs {
			t.Errorf("pxe-bios's QEMU runs in %s, want %s (%s)", got, lanNs, p.Netns)
		}
	} else {
		t.Errorf("pxe-bios's QEMU runs in the root namespace")
	}
	wantTaps := map[string]string{"m-pxe-bios": "prov0"}
	if uefi {
		wantTaps["m-pxe-uefi"] = "prov0"
	}
	if got := tapsIn(t, p.Netns); !maps.Equal(got, wantTaps) {
		t.Errorf("taps in %s (and their bridges): got %v, want %v", p.Netns, got, wantTaps)
	}
	// -U: QEMU holds the image's lock.
	info, err := exec.Command("qemu-img", "info", "-U", "--output", "json", bios.Disk()).Output()
	if err != nil || !strings.Contains(string(info), `"virtual-size": 8589934592`) || !strings.Contains(string(info), `"format": "qcow2"`) {
		t.Errorf("qemu-img info %s: %v\n%s; want an 8G qcow2", bios.Disk(), err, info)
	}

	// The firmware network-boots: BIOS through QEMU's iPXE ROM, UEFI
	// through OVMF's own PXE client.
	timeout := 60 * time.Second
	if uefi {
		timeout = 3 * time.Minute // OVMF under TCG on a busy machine
	}
	got := waitDiscover(t, discovers, timeout, macs...)
	if r := got[bios.MAC]; r.arch != 0 || !r.iPXE {
		t.Errorf("pxe-bios's DHCPDISCOVER: %+v, want arch 0 from iPXE (option 175)", r)
	}
	if uefi {
		if r := got[efi.MAC]; r.arch != 7 || r.iPXE || !strings.HasPrefix(r.vendor, "PXEClient:Arch:00007") {
			t.Errorf("pxe-uefi's DHCPDISCOVER: %+v, want arch 7 from OVMF's own PXE client (no option 175)", r)
		}
	}
	if b, err := os.ReadFile(bios.Console()); err != nil || !strings.Contains(string(b), "iPXE") {
		t.Errorf("pxe-bios's console log %s shows no iPXE: %v", bios.Console(), err)
	}

	var list strings.Builder
	if err := sandbox.PrintMachines(&list, cfg.Dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("machine list:\n%s", list.String())
	for _, m := range []*sandbox.Machine{bios, efi} {
		if m != nil && !strings.Contains(list.String(), m.Console()) {
			t.Errorf("machine list lacks %s's console %s", m.Name, m.Console())
		}
	}

	// A power cycle: a new QEMU on the same disk and tap.
	diskBefore, err := os.Stat(bios.Disk())
	if err != nil {
		t.Fatal(err)
	}
	restarted, err := sandbox.RestartMachine(ctx, cfg.Dir, "pxe-bios")
	if err != nil {
		t.Fatalf("RestartMachine: %v", err)
	}
	if restarted.QEMU == nil || restarted.QEMU.PID == bios.QEMU.PID || !procGone(bios.QEMU.PID) || procGone(restarted.QEMU.PID) {
		t.Errorf("after RestartMachine: QEMU %+v, the old one (pid %d) gone: %v", restarted.QEMU, bios.QEMU.PID, procGone(bios.QEMU.PID))
	}
	if diskAfter, err := os.Stat(bios.Disk()); err != nil || !os.SameFile(diskBefore, diskAfter) {
		t.Errorf("pxe-bios's disk after RestartMachine: %v, want the same file", err)
	}
	if st, _ := sandbox.LoadState(cfg.Dir); st == nil || st.Machines[0].QEMU == nil || *st.Machines[0].QEMU != *restarted.QEMU {
		t.Errorf("sandbox.json does not record the restarted QEMU %+v", restarted.QEMU)
	}
	if _, ok := tapsIn(t, p.Netns)["m-pxe-bios"]; !ok {
		t.Error("tap m-pxe-bios gone after RestartMachine")
	}
	bios = restarted

	if err := sandbox.RemoveMachine(ctx, cfg.Dir, "pxe-bios"); err != nil {
		t.Fatalf("RemoveMachine: %v", err)
	}
	if !procGone(bios.QEMU.PID) {
		t.Errorf("pxe-bios's QEMU (pid %d) survived machine rm", bios.QEMU.PID)
	}
	if _, ok := tapsIn(t, p.Netns)["m-pxe-bios"]; ok {
		t.Error("tap m-pxe-bios left after machine rm")
	}
	if _, err := os.Stat(bios.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after machine rm: %v, want it gone", bios.Dir, err)
	}
	if st, _ := sandbox.LoadState(cfg.Dir); slices.ContainsFunc(st.Machines, func(m sandbox.Machine) bool { return m.Name == "pxe-bios" }) {
		t.Error("pxe-bios still recorded after machine rm")
	}
	if err := sandbox.RemoveMachine(ctx, cfg.Dir, "pxe-bios"); err == nil || !strings.Contains(err.Error(), "no machine pxe-bios") {
		t.Errorf("RemoveMachine pxe-bios again: got %v, want an error saying there is none", err)
	}

	down(t, cfg)
	if efi != nil && !eventually(func() bool { return procGone(efi.QEMU.PID) }) {
		t.Errorf("pxe-uefi's QEMU (pid %d) survived down", efi.QEMU.PID)
	}
	if ns := netnsNames(t, cfg.Prefix); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	if entries, _ := os.ReadDir(cfg.Dir); len(entries) > 0 {
		t.Errorf("files left in %s: %v", cfg.Dir, entries)
	}
}

func TestMachineConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  sandbox.MachineConfig
		want string
	}{
		{sandbox.MachineConfig{Name: "Node_1"}, `machine name "Node_1"`},
		{sandbox.MachineConfig{Name: ""}, `machine name ""`},
		{sandbox.MachineConfig{Name: "n1", DiskSize: "8 GB"}, `--disk "8 GB"`},
		{sandbox.MachineConfig{Name: "n1", Memory: "-1"}, `--memory "-1"`},
		{sandbox.MachineConfig{Name: "n1", MAC: "52:54:00:12:34"}, `--mac "52:54:00:12:34"`},
		{sandbox.MachineConfig{Name: "n1", MAC: "01:00:5e:00:00:01"}, "multicast"},
	} {
		if _, err := sandbox.AddMachine(context.Background(), tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("AddMachine(%+v): got %v, want an error containing %q", tt.cfg, err, tt.want)
		}
	}
}

func TestMachineMAC(t *testing.T) {
	a, b := sandbox.MachineMAC("node1"), sandbox.MachineMAC("node2")
	if a != sandbox.MachineMAC("node1") || a == b {
		t.Errorf("MachineMAC: node1 %s, node2 %s: want one MAC per name, always the same", a, b)
	}
	for _, m := range []string{a, b} {
		if hw, err := net.ParseMAC(m); err != nil || !strings.HasPrefix(m, "52:54:00:") || len(hw) != 6 {
			t.Errorf("MachineMAC = %q, want 52:54:00:xx:xx:xx", m)
		}
	}
}

func TestDefaultBootCommand(t *testing.T) {
	p := sandbox.Provisioning{
		BootInterface: "prov", BootAddress: "172.31.252.2", PoolStart: "172.31.252.100", PoolEnd: "172.31.252.199",
		HTTPListen: "172.31.252.2:8080", BootDir: "/d/boot", BootMetrics: "172.31.255.9:9465",
	}
	j := sandbox.Join{Server: "https://172.31.255.1:8443", TokenFile: "/d/boot/join-token", CAFile: "/d/server/ca.crt", Site: "sandbox"}
	got := strings.Join(sandbox.DefaultBootCommand("/bin/hearth")(p, j), " ")
	want := "/bin/hearth boot --server https://172.31.255.1:8443 --join-token-file /d/boot/join-token --ca-file /d/server/ca.crt --name boot --data-dir /d/boot" +
		" --interface prov --address 172.31.252.2 --dhcp-mode full --pool-start 172.31.252.100 --pool-end 172.31.252.199 --http-listen 172.31.252.2:8080" +
		" --site sandbox --metrics-listen 172.31.255.9:9465"
	if got != want {
		t.Errorf("DefaultBootCommand:\ngot  %s\nwant %s", got, want)
	}
}

// TestStorageNetwork: with shared storage, the underlay gets
// PREFIX-storage at .8, which the hosts and the root namespace reach and
// which reaches nothing beyond the underlay nor forwards; Down stops what
// runs in it and deletes it.
func TestStorageNetwork(t *testing.T) {
	cfg := testConfig(t)
	cfg.SharedStorage = true
	s, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sandbox.Down(context.Background(), cfg) })
	if err := s.BuildNetwork(); err != nil {
		t.Fatalf("BuildNetwork: %v", err)
	}
	st := s.State.Storage
	if st == nil || st.Netns != cfg.Prefix+"-storage" || st.Address != addrPlus(cfg.Underlay, 8) || !slices.Contains(s.State.Namespaces, st.Netns) {
		t.Fatalf("storage: got %+v (namespaces %v), want %s-storage at .8 of %s, recorded", st, s.State.Namespaces, cfg.Prefix, cfg.Underlay)
	}
	server, said := startIn(t, s, st.Netns, "test-listen", st.Address+":7777")
	if said != "listening" {
		t.Fatalf("listener in %s: %s", st.Netns, said)
	}
	h1 := s.State.Hosts[0]
	var got string
	err = netns.DoNamed(h1.Netns, func() (err error) {
		got, err = readFrom(st.Address + ":7777")
		return err
	})
	if want := "interfaces lo underlay"; err != nil || got != want {
		t.Errorf("from %s to %s:7777: got %q, %v; want %q", h1.Name, st.Address, got, err, want)
	}
	if got, err := readFrom(st.Address + ":7777"); err != nil || got == "" {
		t.Errorf("from the root namespace to %s:7777: got %q, %v", st.Address, got, err)
	}
	err = netns.DoNamed(st.Netns, func() error {
		if f, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(f)) != "0" {
			return fmt.Errorf("ip_forward is %q", f)
		}
		c, err := net.DialTimeout("udp", "192.0.2.1:53", time.Second)
		if err == nil {
			_, err = c.Write([]byte("x"))
			c.Close()
		}
		if !errors.Is(err, unix.ENETUNREACH) {
			return fmt.Errorf("to 192.0.2.1: got %v, want network is unreachable", err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("in %s: %v", st.Netns, err)
	}

	if err := sandbox.Down(context.Background(), cfg); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if !eventually(func() bool { return procGone(server.Process.Pid) }) {
		t.Errorf("the process in %s survived Down", st.Netns)
	}
	if _, err := os.Stat(netns.Path(st.Netns)); !os.IsNotExist(err) {
		t.Errorf("%s after Down: %v, want it gone", st.Netns, err)
	}
}
