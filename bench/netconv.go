package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/sandbox"
)

// NetConfig says how to run the network convergence benchmark.
type NetConfig struct {
	// SandboxDir is the sandbox's directory (its sandbox.json names the
	// hosts' and the internet's namespaces).
	SandboxDir string
	// Runs is how many times each convergence is measured.
	Runs int
	// Tenant to work in (created if missing).
	Tenant string
	// CIDR of each run's subnet.
	CIDR string
	// Interval between pings.
	Interval time.Duration
	// Timeout for one run.
	Timeout time.Duration
	Logf    func(format string, args ...any)
}

// NetResult is the measured moments, one of each per run.
type NetResult struct {
	// Create is the API's answer to the VM create; Tap the create→the
	// VM's tap on its host; Reach the create→a peer on another host
	// reaching it; FIP the floating IP's create→the internet reaching
	// the VM through it.
	Create, Tap, Reach, FIP []time.Duration
	// Published is the VM create→the network's status.ports listing
	// the VM's port (the server's network controller), which the other
	// hosts' agents program their FDB and neighbours from.
	Published []time.Duration
	// Asked is the VM create→the first of the peer's ARP requests
	// reaching the VM (flooded to its host over VXLAN).
	Asked []time.Duration
	// Carrier is the VM's tap attached (as QEMU attaches at start)→its
	// link operationally up; Rest the link up→the peer reaching the VM.
	Carrier, Rest []time.Duration
}

// RunNet measures how fast tenant networks converge on a running sandbox
// of two hosts or more, with the sandbox's internet: in each run it makes
// a new network (named after the run) with one subnet routed to the
// internet, and a peer VM on the second host; then it creates a VM on the
// first host, which does not carry the network yet, and times until the
// peer reaches it; then a floating IP pointed at the VM, timed until the
// internet namespace reaches the VM through it.
//
// The VMs are created Stopped, so no guest boots: the data plane makes
// their taps all the same (a stopped VM keeps its port), and this
// process attaches to each tap as QEMU would and answers ARP and ping in
// the guest's place (tapendpoint.go). So the figures are the control
// plane's and the data plane's share (API, IPAM, the network controller,
// the watch to the agents, their Apply, DHCP servers started, FDB and
// routes programmed on both hosts), without TCG.
func RunNet(ctx context.Context, c *client.Client, cfg NetConfig, w io.Writer) (*NetResult, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	st, err := sandbox.LoadState(cfg.SandboxDir)
	if err != nil {
		return nil, err
	}
	if len(st.Hosts) < 2 {
		return nil, fmt.Errorf("the sandbox in %s has %d hosts; the benchmark needs two (hearth sandbox up --hosts 2)", cfg.SandboxDir, len(st.Hosts))
	}
	if st.Internet == nil {
		return nil, fmt.Errorf("the sandbox in %s has no internet namespace; make it again with this hearth", cfg.SandboxDir)
	}
	t := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: cfg.Tenant}}
	if _, err := c.Create(ctx, t); err != nil && !api.IsAlreadyExists(err) {
		return nil, err
	}
	res := &NetResult{}
	run := fmt.Sprintf("cv%d", time.Now().Unix()%100000)
	for i := range cfg.Runs {
		r := &netRun{c: c, cfg: cfg, st: st, name: fmt.Sprintf("%s-%d", run, i)}
		err := r.measure(ctx, res)
		r.cleanup(ctx)
		if err != nil {
			return res, fmt.Errorf("run %d: %w", i, err)
		}
		cfg.Logf("run %d: create %s, tap %s, published %s, asked %s, reached %s (carrier %s), floating IP %s", i,
			ms(res.Create[i]), ms(res.Tap[i]), ms(res.Published[i]), ms(res.Asked[i]), ms(res.Reach[i]), ms(res.Carrier[i]), ms(res.FIP[i]))
	}
	fmt.Fprintf(w, "%d runs on a %d-host sandbox; VMs Stopped, their taps answered by this process (no guest boot)\n\n", cfg.Runs, len(st.Hosts))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "convergence\tp50\tp95\tmax\t")
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{
		{"VM create: API answer", res.Create},
		{"VM create→its tap on its host", res.Tap},
		{"VM create→its port in Network status.ports", res.Published},
		{"VM create→peer's ARP reaches it", res.Asked},
		{"VM create→peer on the other host reaches it", res.Reach},
		{"  tap attached→its link up", res.Carrier},
		{"  link up→peer reaches it", res.Rest},
		{"FloatingIP create→internet reaches the VM", res.FIP},
	} {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", row.name, ms(pct(row.d, 50)), ms(pct(row.d, 95)), ms(pct(row.d, 100)))
	}
	return res, tw.Flush()
}

type netRun struct {
	c    *client.Client
	cfg  NetConfig
	st   *sandbox.State
	name string
	eps  []*tapEndpoint
	vms  []string
	fip  bool
	made []api.Object // network and subnet, in order
	vni  uint32       // the network's, once known
}

func (r *netRun) meta(name string) api.ObjectMeta {
	return api.ObjectMeta{Name: name, Tenant: r.cfg.Tenant, Labels: map[string]string{"hearth.dev/bench": "net"}}
}

func (r *netRun) measure(ctx context.Context, res *NetResult) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	hostA, hostB := r.st.Hosts[0], r.st.Hosts[1]
	nw := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"}, Metadata: r.meta(r.name),
		Spec: api.NetworkSpec{ExternalNetwork: sandbox.ExternalNetworkName}}
	sn := &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"}, Metadata: r.meta(r.name),
		Spec: api.SubnetSpec{Network: r.name, CIDR: r.cfg.CIDR}}
	for _, o := range []api.Object{nw, sn} {
		if _, err := r.c.Create(ctx, o); err != nil {
			return err
		}
		r.made = append(r.made, o)
	}
	// The peer, on the second host, ready before the clock starts.
	if o, err := r.c.Get(ctx, "Network", r.cfg.Tenant, r.name); err == nil {
		r.vni = uint32(o.(*api.Network).Status.VNI)
	}
	peer, peerIfc, err := r.createVM(ctx, r.name+"-peer", hostB.Name)
	if err != nil {
		return err
	}
	peerEP, err := r.attach(ctx, hostB, peer, peerIfc)
	if err != nil {
		return err
	}
	// The peer is ready once it reaches its gateway, the router on its
	// own host: its tap's bridge port forwards then (the kernel turns a
	// new tap's port on up to a second after its carrier).
	o, err := r.c.Get(ctx, "Subnet", r.cfg.Tenant, r.name)
	if err != nil {
		return err
	}
	gw, err := netip.ParseAddr(o.(*api.Subnet).Spec.Gateway)
	if err != nil {
		return fmt.Errorf("subnet %s: spec.gateway: %w", r.name, err)
	}
	if err := peerEP.ping(ctx, gw, r.cfg.Interval); err != nil {
		return fmt.Errorf("the peer on %s never reached its gateway %s: %w", hostB.Name, gw, err)
	}

	// The moment the server publishes the VM's port, from a watch
	// started before the clock.
	_, rv, err := r.c.List(ctx, "Network", r.cfg.Tenant, client.ListOptions{})
	if err != nil {
		return err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events, _, err := r.c.WatchOnce(wctx, "Network", r.cfg.Tenant, client.ListOptions{ResourceVersion: rv})
	if err != nil {
		return err
	}
	published := make(chan time.Time, 1)
	go func() {
		defer close(published)
		for ev := range events {
			n, ok := ev.Object.(*api.Network)
			if !ok || n.Metadata.Name != r.name {
				continue
			}
			for _, p := range n.Status.Ports {
				if p.Host == hostA.Name {
					published <- time.Now()
					return
				}
			}
		}
	}()

	start := time.Now()
	vm, ifc, err := r.createVM(ctx, r.name+"-vm", hostA.Name)
	if err != nil {
		return err
	}
	res.Create = append(res.Create, time.Since(start))
	ip, _ := netip.ParseAddr(ifc.IP)
	reached := make(chan error, 1)
	var reachedAt time.Time
	go func() {
		err := peerEP.ping(ctx, ip, r.cfg.Interval)
		reachedAt = time.Now()
		reached <- err
	}()
	epA, err := r.attach(ctx, hostA, vm, ifc)
	if err != nil {
		return err
	}
	attached := time.Now()
	res.Tap = append(res.Tap, attached.Sub(start))
	if err := waitOperUp(ctx, hostA.Netns, dataplane.PortName(vm.Metadata.UID+"/0")); err != nil {
		return err
	}
	up := time.Now()
	res.Carrier = append(res.Carrier, up.Sub(attached))
	if err := <-reached; err != nil {
		return fmt.Errorf("the peer on %s never reached %s at %s: %w", hostB.Name, vm.Metadata.Name, ip, err)
	}
	res.Reach = append(res.Reach, reachedAt.Sub(start))
	res.Rest = append(res.Rest, max(0, reachedAt.Sub(up)))
	epA.mu.Lock()
	res.Asked = append(res.Asked, epA.asked.Sub(start))
	epA.mu.Unlock()
	pub, ok := <-published
	if !ok {
		return fmt.Errorf("the watch of network %s ended before its status listed the port on %s", r.name, hostA.Name)
	}
	res.Published = append(res.Published, pub.Sub(start))
	stopWatch()

	fip := &api.FloatingIP{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "FloatingIP"}, Metadata: r.meta(r.name),
		Spec: api.FloatingIPSpec{ExternalNetwork: sandbox.ExternalNetworkName, Target: &api.FloatingIPTarget{VM: vm.Metadata.Name}}}
	start = time.Now()
	out, err := r.c.Create(ctx, fip)
	if err != nil {
		return err
	}
	r.fip = true
	addr, err := netip.ParseAddr(out.(*api.FloatingIP).Status.Address)
	if err != nil {
		return fmt.Errorf("floating IP %s: status.address %q: %w", r.name, out.(*api.FloatingIP).Status.Address, err)
	}
	if err := pingFromNetns(ctx, r.st.Internet.Netns, addr, r.cfg.Interval); err != nil {
		return fmt.Errorf("the internet never reached %s through floating IP %s: %w", vm.Metadata.Name, addr, err)
	}
	res.FIP = append(res.FIP, time.Since(start))
	return nil
}

// createVM creates a stopped VM pinned to host with one NIC on the run's
// network, and returns it with the NIC's allocation (made in the create's
// transaction, so it is in the answer).
func (r *netRun) createVM(ctx context.Context, name, host string) (*api.VirtualMachine, api.VMInterfaceStatus, error) {
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"}, Metadata: r.meta(name),
		Spec: api.VirtualMachineSpec{Host: host, PowerState: api.PowerStopped, Memory: 64 << 20,
			Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: r.kernel()}, Initrd: &api.BootFile{Image: r.initrd()}},
			NICs: []api.VMNIC{{Network: r.name}}}}
	out, err := r.c.Create(ctx, vm)
	if err != nil {
		return nil, api.VMInterfaceStatus{}, err
	}
	r.vms = append(r.vms, name)
	vm = out.(*api.VirtualMachine)
	if len(vm.Status.Interfaces) != 1 || vm.Status.Interfaces[0].IP == "" {
		return nil, api.VMInterfaceStatus{}, fmt.Errorf("VM %s: the create's answer has no address in status.interfaces (%+v)", name, vm.Status.Interfaces)
	}
	return vm, vm.Status.Interfaces[0], nil
}

// kernel and initrd name the sandbox's test guest, which the VMs would
// boot if they were started (they are not).
func (r *netRun) kernel() string {
	if g := r.st.TestGuest; g != nil && g.KernelImage != "" {
		return g.KernelImage
	}
	return "testguest-kernel"
}

func (r *netRun) initrd() string {
	if g := r.st.TestGuest; g != nil && g.InitrdImage != "" {
		return g.InitrdImage
	}
	return "testguest-initrd"
}

// attach waits for the VM's tap on its host and answers on it.
func (r *netRun) attach(ctx context.Context, h sandbox.Host, vm *api.VirtualMachine, ifc api.VMInterfaceStatus) (*tapEndpoint, error) {
	tap := dataplane.PortName(vm.Metadata.UID + "/0")
	mac, err := net.ParseMAC(ifc.MAC)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(ifc.IP)
	if err != nil {
		return nil, err
	}
	for {
		ok, err := tapExists(h.Netns, tap)
		if err != nil {
			return nil, err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no tap %s for VM %s on host %s: %w", tap, vm.Metadata.Name, h.Name, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	var ep *tapEndpoint
	for {
		// The agent makes a tap by attaching to it, making it
		// persistent and letting go: busy until it lets go.
		ep, err = openTapEndpoint(h.Netns, tap, mac, ip)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("tap %s for VM %s on host %s stays busy: %w", tap, vm.Metadata.Name, h.Name, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	r.eps = append(r.eps, ep)
	return ep, nil
}

// cleanup deletes what the run made and waits until the VMs are gone, so
// the subnet and network can go too.
func (r *netRun) cleanup(ctx context.Context) {
	for _, ep := range r.eps {
		ep.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	del := func(kind, name string) {
		for ctx.Err() == nil {
			_, err := r.c.Delete(ctx, kind, r.cfg.Tenant, name)
			if err == nil || api.IsNotFound(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for ctx.Err() == nil {
			if _, err := r.c.Get(ctx, kind, r.cfg.Tenant, name); api.IsNotFound(err) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		r.cfg.Logf("%s %s/%s: still there after cleanup", kind, r.cfg.Tenant, name)
	}
	if r.fip {
		del("FloatingIP", r.name)
	}
	for _, vm := range r.vms {
		del("VirtualMachine", vm)
	}
	for i := len(r.made) - 1; i >= 0; i-- {
		o := r.made[i]
		del(o.GetTypeMeta().Kind, o.GetMetadata().Name)
	}
	// And until the hosts have let the network go, so that the next
	// run, which may get the same VNI, times its own network only.
	if r.vni == 0 {
		return
	}
	for _, h := range r.st.Hosts[:2] {
		for ctx.Err() == nil {
			if ok, err := tapExists(h.Netns, dataplane.BridgeName(r.vni)); err != nil || !ok {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
