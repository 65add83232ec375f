package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/dhcp/dhcptest"
	"hearth.dev/hearth/netns"
)

// DHCPConfig says how hard perfdhcp pushes each DHCP server.
type DHCPConfig struct {
	// Rate is the DORA exchanges perfdhcp starts per second (-r).
	Rate int
	// Clients is how many different clients it simulates (-R).
	Clients int
	// Duration of the run against each server (-p).
	Duration time.Duration
	// Servers to measure, in order: "hearth", "dnsmasq", "kea".
	Servers []string
}

// DHCPServers are the servers RunDHCP knows, in the order it runs them.
var DHCPServers = []string{"hearth", "dnsmasq", "kea"}

// The bench network: Hearth's DHCP server and its peers in turn on the
// server side of a veth, perfdhcp on the client side acting as a relay
// from 10.78.0.2. The pool is large enough that no server runs out.
var (
	dhcpServerAddr = netip.MustParsePrefix("10.78.0.1/16")
	dhcpRelayAddr  = netip.MustParsePrefix("10.78.0.2/16")
	dhcpPoolStart  = netip.MustParseAddr("10.78.1.0")
	dhcpPoolEnd    = netip.MustParseAddr("10.78.255.254")
	dhcpLeaseTime  = time.Hour
)

// perfStats is perfdhcp's summary of one run.
type perfStats struct {
	Server string
	Rate   float64 // completed 4-way exchanges per second
	// Per exchange half: "DISCOVER-OFFER" and "REQUEST-ACK".
	Sent, Received, Drops map[string]int
	AvgDelay, MaxDelay    map[string]string
}

// RunDHCP measures DORA exchanges per second with perfdhcp (Debian's
// kea-admin package) against Hearth, dnsmasq and Kea, one after the other
// on the same namespace network, address and pool, and writes a table.
func RunDHCP(ctx context.Context, cfg DHCPConfig, w io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("bench dhcp: run as root: it makes network namespaces")
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = DHCPServers
	}
	// The program each server needs, and the Debian package it comes in.
	tools := map[string][2]string{"perfdhcp": {"perfdhcp", "kea-admin"}, "dnsmasq": {"dnsmasq", "dnsmasq-base"}, "kea": {"kea-dhcp4", "kea-dhcp4-server"}}
	for _, s := range append([]string{"perfdhcp"}, cfg.Servers...) {
		if tool, ok := tools[s]; ok {
			if _, err := exec.LookPath(tool[0]); err != nil {
				return fmt.Errorf("bench dhcp: %s is not installed: apt-get install %s", tool[0], tool[1])
			}
		}
	}
	n, err := dhcptest.New(dhcpServerAddr, net.HardwareAddr{0x02, 0x78, 0, 0, 0, 0x02})
	if err != nil {
		return fmt.Errorf("bench dhcp: building the namespace network: %w", err)
	}
	defer n.Close()
	if err := n.AddAddr(n.Client, dhcptest.ClientLink, dhcpRelayAddr); err != nil {
		return err
	}
	secs := int(cfg.Duration.Round(time.Second) / time.Second)
	perf := []string{"perfdhcp", "-4", "-r", strconv.Itoa(cfg.Rate), "-R", strconv.Itoa(cfg.Clients), "-p", strconv.Itoa(secs), "-l", dhcptest.ClientLink}
	fmt.Fprintf(w, "DHCP DORA exchanges per second, perfdhcp against each server in turn, %ds each\n", secs)
	fmt.Fprintf(w, "network: two network namespaces joined by a veth; server %s on %s, perfdhcp relaying from %s on %s\n",
		dhcpServerAddr, dhcptest.ServerLink, dhcpRelayAddr, dhcptest.ClientLink)
	fmt.Fprintf(w, "pool %s-%s, lease %s, leases persisted by every server, per-packet logging off\n", dhcpPoolStart, dhcpPoolEnd, dhcpLeaseTime)
	fmt.Fprintf(w, "client (in the client namespace): %s\n\n", strings.Join(perf, " "))

	var rows []perfStats
	for _, name := range cfg.Servers {
		dir, err := os.MkdirTemp("", "hearth-bench-dhcp-")
		if err != nil {
			return err
		}
		row, err := benchOneDHCP(ctx, n, name, dir, perf, w)
		os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("bench dhcp: %s: %w", name, err)
		}
		rows = append(rows, row)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tDORA/s\tDISCOVER sent\tOFFER recv\tREQUEST sent\tACK recv\tdrops D-O\tdrops R-A\tavg D-O\tavg R-A\tmax R-A\t")
	for _, r := range rows {
		do, ra := "DISCOVER-OFFER", "REQUEST-ACK"
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", r.Server, r.Rate,
			r.Sent[do], r.Received[do], r.Sent[ra], r.Received[ra], r.Drops[do], r.Drops[ra], r.AvgDelay[do], r.AvgDelay[ra], r.MaxDelay[ra])
	}
	return tw.Flush()
}

// benchOneDHCP starts one server in the server namespace, waits until it
// answers, runs perfdhcp against it and stops it.
func benchOneDHCP(ctx context.Context, n *dhcptest.Net, name, dir string, perf []string, w io.Writer) (perfStats, error) {
	stop, version, err := startDHCPServer(ctx, n, name, dir)
	if err != nil {
		return perfStats{}, err
	}
	defer stop()
	if err := waitDHCP(ctx, n, 10*time.Second); err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			err = fmt.Errorf("%w\n%s:\n%s", err, filepath.Base(l), b)
		}
		return perfStats{}, err
	}
	fmt.Fprintf(w, "%s: %s\n", name, version)
	cmd := exec.CommandContext(ctx, perf[0], perf[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Start(n.Client, cmd); err != nil {
		return perfStats{}, err
	}
	err = cmd.Wait()
	// perfdhcp exits 3 when some exchange did not complete: a result,
	// not a failure.
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
		return perfStats{}, fmt.Errorf("perfdhcp: %w\n%s", err, out.String())
	}
	st, err := parsePerfdhcp(out.String())
	if err != nil {
		return perfStats{}, fmt.Errorf("%w\n%s", err, out.String())
	}
	st.Server = name
	return st, nil
}

// startDHCPServer runs name on the server side; stop ends it.
func startDHCPServer(ctx context.Context, n *dhcptest.Net, name, dir string) (stop func(), version string, err error) {
	switch name {
	case "hearth":
		s, err := dhcp.New(dhcp.Config{
			Interface: dhcptest.ServerLink, ServerIP: dhcpServerAddr.Addr(), Mode: dhcp.ModeFull,
			Subnet: dhcpServerAddr.Masked(), Router: dhcpServerAddr.Addr(),
			PoolStart: dhcpPoolStart, PoolEnd: dhcpPoolEnd, LeaseTime: dhcpLeaseTime,
			LeaseFile: filepath.Join(dir, "hearth.leases"),
		})
		if err != nil {
			return nil, "", err
		}
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- netns.Do(n.Server, func() error { return s.Serve(ctx) }) }()
		select {
		case <-s.Ready():
		case err := <-done:
			cancel()
			return nil, "", err
		}
		return func() { cancel(); <-done }, "in this process (dhcp), no Handler, lease file", nil
	case "dnsmasq":
		argv := []string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--port=0",
			"--interface=" + dhcptest.ServerLink, "--bind-interfaces", "--user=root", "--group=root",
			fmt.Sprintf("--dhcp-range=%s,%s,%s,%ds", dhcpPoolStart, dhcpPoolEnd, net.IP(net.CIDRMask(dhcpServerAddr.Bits(), 32)), int(dhcpLeaseTime.Seconds())),
			"--dhcp-option=option:router," + dhcpServerAddr.Addr().String(),
			"--dhcp-authoritative", "--no-ping", "--dhcp-lease-max=1000000", "--quiet-dhcp", "--log-facility=-",
			"--dhcp-leasefile=" + filepath.Join(dir, "dnsmasq.leases"), "--pid-file=" + filepath.Join(dir, "dnsmasq.pid")}
		stop, err := startProcess(n, argv, nil, dir)
		return stop, versionLine("dnsmasq", "--version") + "; " + strings.Join(argv, " "), err
	case "kea":
		conf := fmt.Sprintf(`{"Dhcp4": {
  "interfaces-config": {"interfaces": [%q]},
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "valid-lifetime": %d,
  "authoritative": true,
  "subnet4": [{"id": 1, "subnet": %q, "pools": [{"pool": "%s - %s"}],
    "option-data": [{"name": "routers", "data": %q}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stderr"}], "severity": "WARN"}]
}}`, dhcptest.ServerLink, filepath.Join(dir, "kea-leases4.csv"), int(dhcpLeaseTime.Seconds()),
			dhcpServerAddr.Masked().String(), dhcpPoolStart, dhcpPoolEnd, dhcpServerAddr.Addr().String())
		path := filepath.Join(dir, "kea-dhcp4.json")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, "", err
		}
		env := []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}
		argv := []string{"kea-dhcp4", "-c", path}
		stop, err := startProcess(n, argv, env, dir)
		return stop, "kea-dhcp4 " + versionLine("kea-dhcp4", "-v") + ", defaults (memfile, raw sockets, single-threaded in 2.2), logging WARN", err
	}
	return nil, "", fmt.Errorf("unknown server %q: want one of %s", name, strings.Join(DHCPServers, ", "))
}

// startProcess runs argv in the server namespace; its output goes to a
// file in dir, shown if it fails to answer.
func startProcess(n *dhcptest.Net, argv, env []string, dir string) (func(), error) {
	log, err := os.Create(filepath.Join(dir, argv[0]+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	if err := netns.Start(n.Server, cmd); err != nil {
		log.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	return func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		log.Close()
	}, nil
}

func versionLine(argv ...string) string {
	out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// waitDHCP sends DISCOVERs from the client side until a server answers.
func waitDHCP(ctx context.Context, n *dhcptest.Net, timeout time.Duration) error {
	var conn *net.UDPConn
	err := netns.Do(n.Client, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: dhcpRelayAddr.Addr().AsSlice(), Port: dhcp.ServerPort})
		return err
	})
	if err != nil {
		return fmt.Errorf("probe socket: %w", err)
	}
	defer conn.Close()
	p := &dhcp.Packet{Op: dhcp.BootRequest, XID: 0x4ea27, GIAddr: dhcpRelayAddr.Addr(), Hops: 1}
	p.SetHardwareAddr(net.HardwareAddr{0x02, 0x78, 0xff, 0xff, 0xff, 0xff})
	p.SetMessageType(dhcp.MsgDiscover)
	msg := p.Marshal()
	to := netip.AddrPortFrom(dhcpServerAddr.Addr(), dhcp.ServerPort)
	buf := make([]byte, 2048)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := conn.WriteToUDPAddrPort(msg, to); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if r, err := dhcp.Parse(buf[:k]); err == nil && r.XID == p.XID && r.MessageType() == dhcp.MsgOffer {
			return nil
		}
	}
	return fmt.Errorf("no answer to a DISCOVER within %s", timeout)
}

// parsePerfdhcp reads perfdhcp's final report:
//
//	***Rate statistics***
//	Rate: 2958.2 4-way exchanges/second, expected rate: 3000
//	***Statistics for: DISCOVER-OFFER***
//	sent packets: 29990
//	…
func parsePerfdhcp(out string) (perfStats, error) {
	st := perfStats{Sent: map[string]int{}, Received: map[string]int{}, Drops: map[string]int{},
		AvgDelay: map[string]string{}, MaxDelay: map[string]string{}}
	section := ""
	foundRate := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if s, ok := strings.CutPrefix(line, "***Statistics for: "); ok {
			section = strings.TrimSuffix(s, "***")
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Rate":
			f, err := strconv.ParseFloat(strings.Fields(val + " x")[0], 64)
			if err == nil {
				st.Rate, foundRate = f, true
			}
		case "sent packets":
			st.Sent[section], _ = strconv.Atoi(val)
		case "received packets":
			st.Received[section], _ = strconv.Atoi(val)
		case "drops":
			st.Drops[section], _ = strconv.Atoi(val)
		case "avg delay":
			st.AvgDelay[section] = strings.ReplaceAll(val, " ", "")
		case "max delay":
			st.MaxDelay[section] = strings.ReplaceAll(val, " ", "")
		}
	}
	if !foundRate || len(st.Sent) == 0 {
		return st, errors.New("perfdhcp printed no rate statistics")
	}
	return st, nil
}
