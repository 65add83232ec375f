package dataplanetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/netns"
)

// The data plane's benchmarks (docs/BENCHMARKS.md), run by Go benchmarks
// in package dataplane and meant for `hearth bench dataplane`.

// ScaleConfig says how large a host's state is.
type ScaleConfig struct {
	Networks        int // default 100
	PortsPerNetwork int // default 10: 1,000 NICs
	// Peers each network has on other hosts, with RemotePerNetwork NICs
	// there: FDB entries and router neighbours to make.
	Peers            int // default 2
	RemotePerNetwork int // default 10
	// ExternalEvery: every this many networks has an external network and
	// a floating IP (default 10).
	ExternalEvery int
}

func (c *ScaleConfig) defaults() {
	if c.Networks == 0 {
		c.Networks = 100
	}
	if c.PortsPerNetwork == 0 {
		c.PortsPerNetwork = 10
	}
	if c.Peers == 0 {
		c.Peers = 2
	}
	if c.RemotePerNetwork == 0 {
		c.RemotePerNetwork = 10
	}
	if c.ExternalEvery == 0 {
		c.ExternalEvery = 10
	}
}

// ScaleState is a host's state as ScaleConfig says, on a lab host: taps
// as QEMU's NICs are, the peers' addresses on the lab's underlay (no
// host answers there: nothing here sends to them).
func ScaleState(l *Lab, h *Host, cfg ScaleConfig) dataplane.HostState {
	cfg.defaults()
	s := dataplane.HostState{Underlay: h.DataplaneUnderlay()}
	ext := l.Config.Internet.Masked().Addr().As4()
	for i := range cfg.Networks {
		vni := uint32(1000 + i)
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24)
		n := dataplane.Network{Name: fmt.Sprintf("bench/net%d", i), VNI: vni,
			Subnets: []dataplane.Subnet{{CIDR: cidr, Gateway: cidr.Addr().Next()}}}
		peer := h.Underlay
		for range cfg.Peers {
			peer = peer.Next()
			n.Peers = append(n.Peers, peer)
		}
		a := cidr.Addr().Next()
		for j := range cfg.PortsPerNetwork {
			a = a.Next()
			n.Ports = append(n.Ports, dataplane.Port{Name: dataplane.PortName(fmt.Sprintf("bench/%d/%d", i, j)),
				MAC: net.HardwareAddr{0x52, 0x54, 0, byte(i >> 8), byte(i), byte(j)}, Addresses: []netip.Addr{a}})
		}
		for j := range cfg.RemotePerNetwork {
			a = a.Next()
			n.Remote = append(n.Remote, dataplane.RemotePort{Host: n.Peers[j%len(n.Peers)],
				MAC: net.HardwareAddr{0x52, 0x54, 1, byte(i >> 8), byte(i), byte(j)}, Addresses: []netip.Addr{a}})
		}
		if i%cfg.ExternalEvery == 0 {
			x := ext
			x[3] = byte(10 + i/cfg.ExternalEvery)
			f := ext
			f[3] = byte(130 + i/cfg.ExternalEvery)
			n.External = &dataplane.External{Device: ExternalLink, Address: netip.PrefixFrom(netip.AddrFrom4(x), l.Config.Internet.Bits()), Gateway: l.InternetGateway}
			n.FloatingIPs = []dataplane.FloatingIP{{External: netip.AddrFrom4(f), Internal: n.Ports[0].Addresses[0]}}
		}
		s.Networks = append(s.Networks, n)
	}
	return s
}

// ScaleResult is what RunScale measured.
type ScaleResult struct {
	Config                      ScaleConfig
	Scratch, Same, OnePort      time.Duration
	FullRead, Remove            time.Duration
	OnePortEvents, ScratchEvent int
}

// RunScale measures, on one simulated host: applying a state from
// scratch, applying it again, applying a one-port change, a full read of
// the host (the periodic resync), and removing everything; and counts
// the netlink notifications in the host namespace for the scratch and
// one-port Applies (the one-port change must cost O(change)).
func RunScale(ctx context.Context, cfg ScaleConfig, w io.Writer) (*ScaleResult, error) {
	cfg.defaults()
	if os.Geteuid() != 0 {
		return nil, errors.New("bench dataplane: run as root: it makes network namespaces")
	}
	l, err := New(Config{Hosts: 1})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	h := l.Hosts[0]
	p, err := dataplane.New(dataplane.Config{HostNetns: h.Path(), NetnsPrefix: h.RouterPrefix(), ResyncInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { p.Close() }()
	state := ScaleState(l, h, cfg)
	res := &ScaleResult{Config: cfg}

	timed := func(s dataplane.HostState) (time.Duration, int, error) {
		watch, err := h.Watch()
		if err != nil {
			return 0, 0, err
		}
		start := time.Now()
		err = p.Apply(ctx, s)
		d := time.Since(start)
		watch.Settle(200 * time.Millisecond)
		return d, len(watch.Stop()), err
	}
	if res.Scratch, res.ScratchEvent, err = timed(state); err != nil {
		return nil, fmt.Errorf("from scratch: %w", err)
	}
	if res.Same, _, err = timed(state); err != nil {
		return nil, err
	}
	changed := state
	changed.Networks = slices.Clone(state.Networks)
	mid := &changed.Networks[len(changed.Networks)/2]
	b := mid.Subnets[0].CIDR.Addr().As4()
	b[3] = 250
	newAddr := netip.AddrFrom4(b)
	mid.Ports = append(slices.Clone(mid.Ports), dataplane.Port{Name: dataplane.PortName("bench/new"),
		MAC: net.HardwareAddr{0x52, 0x54, 2, 0, 0, 1}, Addresses: []netip.Addr{newAddr}})
	if res.OnePort, res.OnePortEvents, err = timed(changed); err != nil {
		return nil, fmt.Errorf("one more port: %w", err)
	}
	// A fresh Plane reads everything on its first Apply (adoption), as a
	// periodic resync does.
	p.Close()
	if p, err = dataplane.New(dataplane.Config{HostNetns: h.Path(), NetnsPrefix: h.RouterPrefix(), ResyncInterval: -1}); err != nil {
		return nil, err
	}
	if res.FullRead, _, err = timed(changed); err != nil {
		return nil, err
	}
	if res.Remove, _, err = timed(dataplane.HostState{Underlay: h.DataplaneUnderlay()}); err != nil {
		return nil, err
	}
	if w != nil {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "data plane scale: one simulated host, %d networks, %d NICs (taps), %d peers and %d remote NICs a network, external network and floating IP on every %dth\n",
			cfg.Networks, cfg.Networks*cfg.PortsPerNetwork, cfg.Peers, cfg.RemotePerNetwork, cfg.ExternalEvery)
		fmt.Fprintln(tw, "Apply\ttime\thost netlink notifications\t")
		fmt.Fprintf(tw, "from scratch\t%s\t%d\t\n", res.Scratch.Round(time.Millisecond), res.ScratchEvent)
		fmt.Fprintf(tw, "same state again\t%s\t\t\n", res.Same.Round(time.Microsecond))
		fmt.Fprintf(tw, "one NIC more\t%s\t%d\t\n", res.OnePort.Round(time.Microsecond), res.OnePortEvents)
		fmt.Fprintf(tw, "new Plane (reads all)\t%s\t\t\n", res.FullRead.Round(time.Millisecond))
		fmt.Fprintf(tw, "remove everything\t%s\t\t\n", res.Remove.Round(time.Millisecond))
		tw.Flush()
	}
	return res, nil
}

// PathResult is one path's throughput and latency.
type PathResult struct {
	Path           string
	Gbps           []float64 // per round
	RTT            []time.Duration
	MedianGbps     float64
	RTTP50, RTTAvg time.Duration
}

// ThroughputConfig says how long to measure.
type ThroughputConfig struct {
	Seconds int // per iperf3 run (default 3)
	Rounds  int // alternating runs per path (default 7): the machine is shared, and one run says little
	Pings   int // echo requests per path for the RTT (default 500, 10ms apart)
}

// RunThroughput measures TCP throughput (iperf3, Debian's package) and
// ICMP round-trip time between two endpoints on two simulated hosts,
// over Hearth's VXLAN path (namespaces plugged into tenant bridges like
// VM taps) and over a plain veth/bridge path between the same hosts
// with the same number of hops, in alternating rounds of one run.
func RunThroughput(ctx context.Context, cfg ThroughputConfig, w io.Writer) ([]PathResult, error) {
	if cfg.Seconds == 0 {
		cfg.Seconds = 3
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 7
	}
	if cfg.Pings == 0 {
		cfg.Pings = 500
	}
	pair, err := newVMPair("bench dataplane")
	if err != nil {
		return nil, err
	}
	defer pair.Close()
	l, vms, addrs := pair.lab, pair.vms, pair.addrs
	// Hearth's path: a network with a VM on each host.
	if err := pair.apply(ctx, "bench/path", 4242, nil, nil); err != nil {
		return nil, err
	}
	if err := pair.configure(); err != nil {
		return nil, err
	}

	// The plain path: a bridge on each host with a veth to the underlay
	// bridge, and an endpoint namespace on it.
	plainNet := netip.MustParsePrefix("192.168.77.0/24")
	plain := [2]*Namespace{}
	plainAddrs := [2]netip.Addr{plainNet.Addr().Next(), plainNet.Addr().Next().Next()}
	for i, h := range l.Hosts {
		if err := addBridge(h.Namespace, "plainbr", l.Config.UnderlayMTU, netip.Prefix{}); err != nil {
			return nil, err
		}
		if err := veth(l.Underlay, fmt.Sprintf("plain%d", i), h.Namespace, "plainup", "plainbr", l.Config.UnderlayMTU); err != nil {
			return nil, err
		}
		if err := enslave(l.Underlay, fmt.Sprintf("plain%d", i), UnderlayBr); err != nil {
			return nil, err
		}
		if plain[i], err = l.NewNamespace(fmt.Sprintf("plain%d", i)); err != nil {
			return nil, err
		}
		if err := veth(plain[i], VMLink, h.Namespace, fmt.Sprintf("pv%d", i), "plainbr", l.Config.UnderlayMTU); err != nil {
			return nil, err
		}
		if err := addAddr(plain[i], VMLink, netip.PrefixFrom(plainAddrs[i], plainNet.Bits())); err != nil {
			return nil, err
		}
	}

	if HoldForDebug != nil {
		HoldForDebug()
	}
	paths := []struct {
		name     string
		from, to *Namespace
		dst      netip.Addr
	}{
		{"Hearth VXLAN (tenant MTU 1450)", vms[0], vms[1], addrs[1]},
		{"plain veth/bridge (MTU 1500)", plain[0], plain[1], plainAddrs[1]},
	}
	results := make([]PathResult, len(paths))
	for i, pth := range paths {
		results[i].Path = pth.name
		if err := pth.from.Ping(pth.dst, 50); err != nil {
			return nil, err
		}
	}
	for range cfg.Rounds {
		for i, pth := range paths {
			gbps, err := iperf(ctx, pth.from, pth.to, pth.dst, cfg.Seconds)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", pth.name, err)
			}
			results[i].Gbps = append(results[i].Gbps, gbps)
		}
	}
	for i, pth := range paths {
		pg, err := pth.from.NewPinger()
		if err != nil {
			return nil, err
		}
		for range cfg.Pings {
			rtt, err := pg.Ping(pth.dst, time.Second)
			if err == nil {
				results[i].RTT = append(results[i].RTT, rtt)
			}
			time.Sleep(10 * time.Millisecond)
		}
		pg.Close()
		r := &results[i]
		sorted := slices.Clone(r.Gbps)
		slices.Sort(sorted)
		r.MedianGbps = sorted[len(sorted)/2]
		rtts := slices.Clone(r.RTT)
		slices.Sort(rtts)
		var sum time.Duration
		for _, d := range rtts {
			sum += d
		}
		if len(rtts) > 0 {
			r.RTTP50 = rtts[len(rtts)/2]
			r.RTTAvg = sum / time.Duration(len(rtts))
		}
	}
	if w != nil {
		fmt.Fprintf(w, "data plane path: TCP (iperf3 -t %d, %d alternating rounds, median) and ICMP echo RTT (%d pings 10ms apart, from Go) between two namespaces on two simulated hosts\n",
			cfg.Seconds, cfg.Rounds, cfg.Pings)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "path\tGbit/s (median)\trounds\tRTT p50\tRTT avg\t")
		for _, r := range results {
			var rounds []string
			for _, g := range r.Gbps {
				rounds = append(rounds, fmt.Sprintf("%.2f", g))
			}
			fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t%s\t\n", r.Path, r.MedianGbps, strings.Join(rounds, " "), r.RTTP50.Round(time.Microsecond), r.RTTAvg.Round(time.Microsecond))
		}
		tw.Flush()
		if len(results) == 2 && results[1].MedianGbps > 0 {
			fmt.Fprintf(w, "VXLAN/plain throughput %.2f×, RTT p50 difference %s\n", results[0].MedianGbps/results[1].MedianGbps, (results[0].RTTP50 - results[1].RTTP50).Round(time.Microsecond))
		}
	}
	return results, nil
}

// HoldForDebug, when set, is called once the paths are built.
var HoldForDebug func()

// iperf runs an iperf3 server in one namespace and a client in another,
// and returns the throughput the receiver saw, in Gbit/s.
func iperf(ctx context.Context, client, server *Namespace, dst netip.Addr, seconds int) (float64, error) {
	srv := exec.CommandContext(ctx, "iperf3", "-s", "-1", "-p", "5201")
	var srvOut strings.Builder
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := netns.Start(server.NS, srv); err != nil {
		return 0, err
	}
	defer srv.Wait()
	defer srv.Process.Kill()
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	var err error
	for try := 0; try < 50; try++ {
		time.Sleep(100 * time.Millisecond) // for the server to listen
		cl := exec.CommandContext(ctx, "iperf3", "-c", dst.String(), "-p", "5201", "-t", fmt.Sprint(seconds), "-J")
		var b strings.Builder
		cl.Stdout = &b
		if err = netns.Do(client.NS, cl.Start); err != nil {
			return 0, err
		}
		werr := cl.Wait()
		r.Error = ""
		if err = json.Unmarshal([]byte(b.String()), &r); err != nil {
			err = fmt.Errorf("iperf3: %v; its JSON: %w", werr, err)
			continue
		}
		if strings.Contains(r.Error, "unable to connect") {
			err = errors.New(r.Error)
			continue
		}
		break
	}
	if err != nil {
		return 0, err
	}
	if r.Error != "" || r.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 measured nothing: %q; server: %s", r.Error, srvOut.String())
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// vmPair is a bench's lab: two simulated hosts with a Plane each and a
// VM namespace on each, in one /24 of one network.
type vmPair struct {
	lab    *Lab
	vms    [2]*Namespace
	addrs  [2]netip.Addr
	macs   [2]net.HardwareAddr
	planes [2]*dataplane.Linux
	cidr   netip.Prefix
	gw     netip.Addr
}

// newVMPair makes a vmPair for the bench named what (which needs root
// and iperf3, and says so).
func newVMPair(what string) (p *vmPair, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New(what + ": run as root: it makes network namespaces")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil, errors.New(what + ": iperf3 is not installed: apt-get install iperf3")
	}
	l, err := New(Config{Hosts: 2})
	if err != nil {
		return nil, err
	}
	cidr := netip.MustParsePrefix("10.0.0.0/24")
	gw := cidr.Addr().Next()
	p = &vmPair{lab: l, cidr: cidr, gw: gw, addrs: [2]netip.Addr{gw.Next(), gw.Next().Next()},
		macs: [2]net.HardwareAddr{{0x52, 0x54, 0, 0, 0, 1}, {0x52, 0x54, 0, 0, 0, 2}}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for i, h := range l.Hosts {
		if p.vms[i], err = l.NewVM(fmt.Sprintf("v%d", i)); err != nil {
			return nil, err
		}
		if p.planes[i], err = dataplane.New(dataplane.Config{HostNetns: h.Path(), NetnsPrefix: h.RouterPrefix()}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Close ends the planes and removes the lab.
func (p *vmPair) Close() {
	for _, pl := range p.planes {
		if pl != nil {
			pl.Close()
		}
	}
	p.lab.Close()
}

// state is host i's state: the network name (VNI vni) with its VM's port
// (with sec, if any) and the other host's VM as a remote port.
func (p *vmPair) state(i int, name string, vni uint32, sec *dataplane.PortSecurity) dataplane.HostState {
	l, o := p.lab, 1-i
	return dataplane.HostState{Underlay: l.Hosts[i].DataplaneUnderlay(), Networks: []dataplane.Network{{
		Name: name, VNI: vni, Peers: []netip.Addr{l.Hosts[o].Underlay},
		Subnets: []dataplane.Subnet{{CIDR: p.cidr, Gateway: p.gw}},
		Ports: []dataplane.Port{{Name: dataplane.PortName(fmt.Sprintf("v%d", i)), MAC: p.macs[i], Addresses: []netip.Addr{p.addrs[i]},
			Veth: &dataplane.VethPeer{Netns: p.vms[i].Path()}, Security: sec}},
		Remote: []dataplane.RemotePort{{Host: l.Hosts[o].Underlay, MAC: p.macs[o], Addresses: []netip.Addr{p.addrs[o]}}},
	}}}
}

// apply applies both hosts' states, with sec0 and sec1 on their ports.
func (p *vmPair) apply(ctx context.Context, name string, vni uint32, sec0, sec1 *dataplane.PortSecurity) error {
	if err := p.planes[0].Apply(ctx, p.state(0, name, vni, sec0)); err != nil {
		return err
	}
	return p.planes[1].Apply(ctx, p.state(1, name, vni, sec1))
}

// configure gives each VM its address and the gateway.
func (p *vmPair) configure() error {
	for i, vm := range p.vms {
		if err := vm.Configure(netip.PrefixFrom(p.addrs[i], p.cidr.Bits()), p.gw); err != nil {
			return err
		}
	}
	return nil
}
