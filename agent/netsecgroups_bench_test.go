package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/server/servertest"
)

// go test -run XXX -bench SecurityGroupAPIToHost -benchtime 1x ./agent/
// (docs/BENCHMARKS.md): the time from a SecurityGroup's update in the API
// to the first connection its new rule lets through on a host. The path
// is the agent's own: its cache's informers (with a host's credential),
// hostNetState, the network controller's debounce, Plane.Apply on a
// simulated host; only the VMs are namespaces (veth ports instead of
// taps) and the loop that applies is this test's.
func BenchmarkSecurityGroupAPIToHost(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: makes network namespaces")
	}
	env := servertest.Start(b)
	env.Tenant("lab")
	ctx := servertest.Ctx(b)
	lab, err := dataplanetest.New(dataplanetest.Config{Hosts: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer lab.Close()
	h := lab.Hosts[0]
	hostClient := env.Host("h1")
	tm := func(kind string) api.TypeMeta { return api.TypeMeta{APIVersion: api.APIVersion, Kind: kind} }
	vm := func(name string, groups ...string) *api.VirtualMachine {
		return &api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: api.ObjectMeta{Name: name, Tenant: "lab"},
			Spec: api.VirtualMachineSpec{Host: "h1", Boot: api.VMBoot{From: api.BootFromNetwork}, NICs: []api.VMNIC{{Network: "lan", SecurityGroups: groups}}}}
	}
	web := &api.SecurityGroup{TypeMeta: tm("SecurityGroup"), Metadata: api.ObjectMeta{Name: "web", Tenant: "lab"},
		Spec: api.SecurityGroupSpec{Rules: []api.SecurityGroupRule{{Ports: "80"}}}}
	for _, o := range []api.Object{
		&api.Network{TypeMeta: tm("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}},
		&api.Subnet{TypeMeta: tm("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.50.0.0/24"}},
		web, vm("client"), vm("server", "web"),
	} {
		if _, err := env.Admin.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}

	// The agent's cache and inputs, as a host sees them.
	a := &Agent{cfg: Config{Name: "h1"}, underlay: h.DataplaneUnderlay(), cache: newCache(hostClient, "h1", true)}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.cache.run(cctx)
	if err := a.cache.waitSynced(ctx); err != nil {
		b.Fatal(err)
	}
	plane, err := dataplane.New(dataplane.Config{HostNetns: h.Path(), NetnsPrefix: h.RouterPrefix()})
	if err != nil {
		b.Fatal(err)
	}
	defer plane.Close()
	vms := map[string]*dataplanetest.Namespace{} // by port name
	byName := map[string]*dataplanetest.Namespace{}
	addrOf := map[string]netip.Addr{}
	servertest.Eventually(b, 10*time.Second, func() error {
		for _, name := range []string{"client", "server"} {
			o, err := env.Admin.Get(ctx, "VirtualMachine", "lab", name)
			if err != nil {
				return err
			}
			v := o.(*api.VirtualMachine)
			if len(v.Status.Interfaces) == 0 || v.Status.Interfaces[0].IP == "" {
				return fmt.Errorf("%s has no address yet", name)
			}
			port := dataplane.PortName(portKey(v.Metadata.UID, 0))
			if vms[port] == nil {
				if vms[port], err = lab.NewVM(name); err != nil {
					return err
				}
				byName[name] = vms[port]
			}
			addrOf[name] = netip.MustParseAddr(v.Status.Interfaces[0].IP)
		}
		return nil
	})
	n := &netController{a: a}
	apply := func() error {
		st := hostNetState(n.inputs())
		for i := range st.State.Networks {
			for j := range st.State.Networks[i].Ports {
				p := &st.State.Networks[i].Ports[j]
				if ns := vms[p.Name]; ns != nil {
					p.Veth = &dataplane.VethPeer{Netns: ns.Path()}
				}
			}
		}
		return plane.Apply(ctx, st.State)
	}
	kick := make(chan struct{}, 1)
	a.cache.securityGroups.OnUpdate(func(client.Change) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	if err := apply(); err != nil {
		b.Fatal(err)
	}
	for name, ns := range byName {
		if err := ns.Configure(netip.PrefixFrom(addrOf[name], 24), netip.MustParseAddr("10.50.0.1")); err != nil {
			b.Fatal(err)
		}
	}
	client, server := byName["client"], byName["server"]
	go func() {
		for {
			select {
			case <-cctx.Done():
				return
			case <-kick:
			}
			time.Sleep(netDebounce)
			if err := apply(); err != nil {
				b.Error(err)
			}
		}
	}()
	if err := client.Ping(addrOf["server"], 50); err == nil {
		b.Fatal("the client pings the server; its group allows only tcp 80")
	}

	const changes = 20
	var took []time.Duration
	for range b.N {
		for k := range changes {
			port := 7000 + k
			var ln net.Listener
			if err := netns.Do(server.NS, func() error {
				var err error
				ln, err = net.Listen("tcp", net.JoinHostPort(addrOf["server"].String(), strconv.Itoa(port)))
				return err
			}); err != nil {
				b.Fatal(err)
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			web.Spec.Rules = append(web.Spec.Rules, api.SecurityGroupRule{Ports: strconv.Itoa(port)})
			start := time.Now()
			out, err := env.Admin.Update(ctx, web)
			if err != nil {
				b.Fatal(err)
			}
			web = out.(*api.SecurityGroup)
			for {
				err := netns.Do(client.NS, func() error {
					c, err := net.DialTimeout("tcp", net.JoinHostPort(addrOf["server"].String(), strconv.Itoa(port)), 50*time.Millisecond)
					if err == nil {
						c.Close()
					}
					return err
				})
				if err == nil {
					break
				}
				if time.Since(start) > 10*time.Second {
					b.Fatalf("port %d not open 10s after its rule was written", port)
				}
			}
			took = append(took, time.Since(start))
			ln.Close()
		}
	}
	slices.Sort(took)
	p := func(q int) time.Duration { return took[(len(took)*q+99)/100-1] }
	fmt.Printf("security group rule change, API write → first connection through it on the host (%d changes): p50 %s, p95 %s, max %s\n",
		len(took), p(50).Round(100*time.Microsecond), p(95).Round(100*time.Microsecond), took[len(took)-1].Round(100*time.Microsecond))
	b.ReportMetric(float64(p(95).Microseconds()), "api-to-host-p95-µs")
}
