package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/netns"
)

// BenchmarkNetServices measures a network's DNS and metadata servers on a
// simulated host (the real Plane, router namespace and agent services;
// clients in namespaces attached like VMs), side by side with their peers
// in the same run:
//
//   - dns: dnsperf from a VM's namespace against the gateway, for the
//     network's VM names (bare, qualified and reverse), answered by
//     Hearth's DNS and by dnsmasq serving the same names on the same
//     address in the same router namespace, in alternating rounds;
//
//   - metadata/first-answer: 20 VMs appear one after the other; each gets
//     its lease by DHCP (a client in Go, so the clock is read the moment
//     the ACK arrives), configures it and asks for its instance-id: the
//     time from the ACK to the answer, p50/p95/max;
//
//   - metadata/wrk: wrk's requests per second against the endpoint.
//
//     go test ./agent -run '^$' -bench NetServices -benchtime 1x -v
//
// Needs root, dnsperf, dnsmasq and wrk (Debian: dnsperf, dnsmasq-base,
// wrk).
func BenchmarkNetServices(b *testing.B) {
	for _, tool := range []string{"dnsperf", "dnsmasq", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("needs %s (apt-get install dnsperf dnsmasq-base wrk)", tool)
		}
	}
	l := newSvcLab(b)
	client := l.vms["red/a"]
	queries := filepath.Join(b.TempDir(), "queries")
	if err := os.WriteFile(queries, []byte("b A\nb.net.red.hearth A\na A\n11.1.168.192.in-addr.arpa PTR\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	secs := benchSeconds()
	dnsperf := func(b *testing.B) float64 {
		out, err := runIn(client.NS, "dnsperf", "-s", "192.168.1.1", "-d", queries, "-l", strconv.Itoa(secs), "-c", "4", "-q", "200")
		if err != nil {
			b.Fatal(err)
		}
		return field(out, `Queries per second:\s+([0-9.]+)`)
	}
	// dnsmasq takes port 53 of the gateway in the same router namespace,
	// with the same names, while Hearth's servers are stopped.
	dnsmasq := func(b *testing.B) (stop func()) {
		l.services.stopAll()
		args := []string{"--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv", "--bind-interfaces",
			"--listen-address=192.168.1.1", "--port=53", "--user=root", "--group=root", "--local-ttl=1", "--domain-needed",
			"--pid-file=", "--log-facility=-",
			"--host-record=a.net.red.hearth,a,192.168.1.10", "--host-record=b.net.red.hearth,b,192.168.1.11"}
		cmd := exec.Command("dnsmasq", args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		ns, err := netns.Open(l.plane.RouterNetns(4101))
		if err != nil {
			b.Fatal(err)
		}
		defer ns.Close()
		if err := netns.Start(ns, cmd); err != nil {
			b.Fatal(err)
		}
		stop = func() {
			cmd.Process.Kill()
			cmd.Wait()
			l.apply()
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			m, err := l.lookup("red/a", "b", 1)
			if err == nil && aOf(m) == "NOERROR 192.168.1.11" {
				return stop
			}
			if time.Now().After(deadline) {
				stop()
				b.Fatalf("dnsmasq does not answer: %v %v\n%s", m, err, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Rounds alternate between the two, on a machine shared with others:
	// the median round of each is reported.
	b.Run("dns", func(b *testing.B) {
		for range b.N {
			var hearth, peer []float64
			for range dnsRounds {
				hearth = append(hearth, dnsperf(b))
				stop := dnsmasq(b)
				peer = append(peer, dnsperf(b))
				stop()
			}
			slices.Sort(hearth)
			slices.Sort(peer)
			h, p := hearth[len(hearth)/2], peer[len(peer)/2]
			b.ReportMetric(h, "hearth-queries/s")
			b.ReportMetric(p, "dnsmasq-queries/s")
			b.Logf("dnsperf -s 192.168.1.1 -l %d -c 4 -q 200, %d rounds each, alternating: Hearth %.0f queries/s (rounds %.0f), dnsmasq %.0f queries/s (rounds %.0f): %.0f%%",
				secs, dnsRounds, h, hearth, p, peer, 100*h/p)
		}
	})

	b.Run("metadata/first-answer", func(b *testing.B) {
		for range b.N {
			var took []time.Duration
			for i := range 20 {
				took = append(took, l.firstAnswer(b, i))
			}
			slices.Sort(took)
			p := func(q float64) time.Duration { return took[int(q*float64(len(took)-1)+0.5)] }
			b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p(0.95).Microseconds())/1000, "p95-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
			b.Logf("first metadata answer after the DHCP ACK, 20 VMs: p50 %s p95 %s max %s", p(0.5), p(0.95), took[len(took)-1])
		}
	})
	b.Run("metadata/wrk", func(b *testing.B) {
		for range b.N {
			out, err := runIn(client.NS, "wrk", "-t", "2", "-c", "32", "-d", strconv.Itoa(secs)+"s", "http://169.254.169.254/latest/meta-data/instance-id")
			if err != nil {
				b.Fatal(err)
			}
			rps := field(out, `Requests/sec:\s+([0-9.]+)`)
			b.ReportMetric(rps, "requests/s")
			b.Logf("wrk -t 2 -c 32 -d %ds .../latest/meta-data/instance-id: %.0f requests/s\n%s", secs, rps, out)
		}
	})
}

// dnsRounds of dnsperf are run against each DNS server.
const dnsRounds = 3

// benchSeconds is how long each load generator runs: HEARTH_BENCH_SECONDS,
// default 10.
func benchSeconds() int {
	if n, err := strconv.Atoi(os.Getenv("HEARTH_BENCH_SECONDS")); err == nil && n > 0 {
		return n
	}
	return 10
}

func runIn(ns netns.Handle, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Start(ns, cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w\n%s", name, err, out.String())
	}
	return out.String(), nil
}

func field(out, re string) float64 {
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// firstAnswer adds VM number i to red's network, applies, and then as
// the VM takes its lease by DHCP and asks for its instance-id: the time
// from the ACK to the answer.
func (l *svcLab) firstAnswer(tb testing.TB, i int) time.Duration {
	name := fmt.Sprintf("m%d", i)
	ip := netip.AddrFrom4([4]byte{192, 168, 1, byte(100 + i)})
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0x02, byte(i)}
	vm := nsVM("red", name, "uid-red-"+name, l.in.Host, "net one "+ip.String()+" "+mac.String())
	ns, err := l.lab.NewVM("red-" + name)
	if err != nil {
		tb.Fatal(err)
	}
	l.vms["red/"+name] = ns
	l.in.VMs = append(l.in.VMs, vm)
	l.apply()
	lease, err := dhcpLease(ns, mac)
	if err != nil {
		tb.Fatal(err)
	}
	if lease.IP != ip {
		tb.Fatalf("%s leased %s, want %s", name, lease.IP, ip)
	}
	code, body, err := l.metadata("red/"+name, "/latest/meta-data/instance-id", netip.Addr{})
	took := time.Since(lease.At)
	if err != nil || code != 200 || body != "uid-red-"+name {
		tb.Fatalf("%s's first metadata answer: %d %q %v", name, code, body, err)
	}
	return took
}

// lease is what a DHCP ACK gave.
type lease struct {
	IP, Router netip.Addr
	Prefix     int
	DNS        []netip.Addr
	Domain     string
	// Routes is option 121 as "dst via gw" strings.
	Routes []string
	// At is when the ACK arrived.
	At time.Time
}

// dhcpLease does a DHCP exchange from the namespace's eth0 (a client of
// its own, so the clock is read the moment the ACK arrives), then puts
// the address and the default route on the link as a guest would.
func dhcpLease(ns *dataplanetest.Namespace, mac net.HardwareAddr) (lease, error) {
	var l lease
	var conn *net.UDPConn
	err := netns.Do(ns.NS, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		link, err := h.LinkByName(dataplanetest.VMLink)
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(link); err != nil {
			return err
		}
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dataplanetest.VMLink)
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
				}
			})
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
		if err != nil {
			return err
		}
		conn = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		return l, err
	}
	defer conn.Close()
	if err := ns.WaitOperUp(dataplanetest.VMLink); err != nil {
		return l, err
	}
	var xb [4]byte
	rand.Read(xb[:])
	xid := binary.BigEndian.Uint32(xb[:])
	exchange := func(t dhcp.MessageType, set func(*dhcp.Packet), want dhcp.MessageType) (*dhcp.Packet, error) {
		q := &dhcp.Packet{Op: dhcp.BootRequest, HType: 1, HLen: 6, XID: xid, Flags: dhcp.FlagBroadcast}
		q.SetHardwareAddr(mac)
		q.SetMessageType(t)
		q.SetOption(dhcp.OptParamRequest, []byte{1, 3, 6, 15, 26, 121})
		if set != nil {
			set(q)
		}
		bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
		buf := make([]byte, 1500)
		for try := 0; try < 10; try++ {
			if _, err := conn.WriteToUDP(q.Marshal(), bcast); err != nil {
				return nil, err
			}
			conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			for {
				n, _, err := conn.ReadFromUDP(buf)
				if err != nil {
					break // resend
				}
				p, err := dhcp.Parse(buf[:n])
				if err == nil && p.XID == xid && p.MessageType() == want {
					return p, nil
				}
			}
		}
		return nil, fmt.Errorf("no DHCP %s for %s", want, mac)
	}
	offer, err := exchange(dhcp.MsgDiscover, nil, dhcp.MsgOffer)
	if err != nil {
		return l, err
	}
	server, _ := offer.Options.IP(dhcp.OptServerID)
	ack, err := exchange(dhcp.MsgRequest, func(q *dhcp.Packet) {
		q.SetIPs(dhcp.OptRequestedIP, offer.YIAddr)
		q.SetIPs(dhcp.OptServerID, server)
	}, dhcp.MsgAck)
	if err != nil {
		return l, err
	}
	l.At = time.Now()
	l.IP = ack.YIAddr
	l.Router, _ = ack.Options.IP(dhcp.OptRouter)
	l.DNS = ack.Options.IPs(dhcp.OptDNS)
	l.Domain = ack.Options.String(dhcp.OptDomainName)
	if m, ok := ack.Options.Get(dhcp.OptSubnetMask); ok && len(m) == 4 {
		l.Prefix, _ = net.IPMask(m).Size()
	}
	if r, ok := ack.Options.Get(dhcp.OptClasslessRoutes); ok {
		l.Routes = decodeClassless(r)
	}
	err = ns.Configure(netip.PrefixFrom(l.IP, l.Prefix), l.Router)
	return l, err
}

// decodeClassless reads option 121.
func decodeClassless(b []byte) []string {
	var out []string
	for len(b) > 0 {
		bits := int(b[0])
		n := (bits + 7) / 8
		if len(b) < 1+n+4 {
			break
		}
		var dst [4]byte
		copy(dst[:], b[1:1+n])
		gw := netip.AddrFrom4([4]byte(b[1+n : 1+n+4]))
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(dst), bits).String()+" via "+gw.String())
		b = b[1+n+4:]
	}
	return out
}
