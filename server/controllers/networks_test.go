package controllers_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

// networksEnv starts a server and the Networks controller alone.
func networksEnv(t *testing.T) *servertest.Env {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&controllers.Networks{Client: env.Admin, Recorder: client.NewRecorder(env.Admin, "test/networks"),
			Resync: time.Hour}).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	return env
}

type netObjs struct {
	t   *testing.T
	env *servertest.Env
}

func (o netObjs) create(objs ...api.Object) {
	o.t.Helper()
	for _, obj := range objs {
		if _, err := o.env.Admin.Create(servertest.Ctx(o.t), obj); err != nil {
			o.t.Fatalf("create %s: %v", api.Ref(obj), err)
		}
	}
}

func (o netObjs) get(kind, tenant, name string) api.Object {
	o.t.Helper()
	obj, err := o.env.Admin.Get(servertest.Ctx(o.t), kind, tenant, name)
	if err != nil {
		o.t.Fatal(err)
	}
	return obj
}

func tmeta(kind string) api.TypeMeta { return api.TypeMeta{APIVersion: api.APIVersion, Kind: kind} }

func nvm(tenant, name, host string, nics ...api.VMNIC) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: tmeta("VirtualMachine"), Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.VirtualMachineSpec{Host: host, Boot: api.VMBoot{From: api.BootFromNetwork}, NICs: nics}}
}

func nfip(tenant, name, ext, vm string) *api.FloatingIP {
	f := &api.FloatingIP{TypeMeta: tmeta("FloatingIP"), Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.FloatingIPSpec{ExternalNetwork: ext}}
	if vm != "" {
		f.Spec.Target = &api.FloatingIPTarget{VM: vm}
	}
	return f
}

// TestNetworkStatus: the controller publishes each network's hosts,
// ports and routers from where its VMs run (and the server gives each
// router an address on the external network, taking it back when the
// host goes); subnets and external networks count what is used and
// free; a change touches only the networks it concerns.
func TestNetworkStatus(t *testing.T) {
	env := networksEnv(t)
	env.Tenant("lab")
	o := netObjs{t, env}
	ctx := servertest.Ctx(t)
	o.create(
		&api.ExternalNetwork{TypeMeta: tmeta("ExternalNetwork"), Metadata: api.ObjectMeta{Name: "uplink"},
			Spec: api.ExternalNetworkSpec{CIDR: "192.0.2.0/24", RangeStart: "192.0.2.10", RangeEnd: "192.0.2.20"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}, Spec: api.HostSpec{Address: "10.99.0.1"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h2"}, Spec: api.HostSpec{Address: "10.99.0.2"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}, Spec: api.NetworkSpec{ExternalNetwork: "uplink"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "lan-b", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.1.0.0/24"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "other", Tenant: "lab"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "other-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "other", CIDR: "10.2.0.0/24"}},
		nvm("lab", "web", "h1", api.VMNIC{Network: "lan", Subnet: "lan-a", IP: "10.0.0.10"}),
		nvm("lab", "db", "h2", api.VMNIC{Network: "lan", Subnet: "lan-b", IP: "10.1.0.10"}),
		nvm("lab", "idle", "", api.VMNIC{Network: "lan", Subnet: "lan-a", IP: "10.0.0.11"}),
		nvm("lab", "multi", "h1", api.VMNIC{Network: "lan", Subnet: "lan-a", IP: "10.0.0.12"}, api.VMNIC{Network: "other", IP: "10.2.0.10"}),
	)
	mac := func(vm string, nic int) string {
		return o.get("VirtualMachine", "lab", vm).(*api.VirtualMachine).Status.Interfaces[nic].MAC
	}
	port := func(vm string, nic int, host, ip string) api.NetworkPort {
		return api.NetworkPort{VM: vm, NIC: nic, Host: host, MAC: mac(vm, nic), IPs: []string{ip}}
	}
	network := func(name string) *api.Network { return o.get("Network", "lab", name).(*api.Network) }
	waitNetwork := func(name string, hosts []string, ports []api.NetworkPort, check func(*api.Network) error) *api.Network {
		t.Helper()
		var n *api.Network
		servertest.Eventually(t, 10*time.Second, func() error {
			n = network(name)
			if !reflect.DeepEqual(n.Status.Hosts, hosts) || !reflect.DeepEqual(n.Status.Ports, ports) {
				return fmt.Errorf("network %s: hosts %v ports %+v, want %v %+v", name, n.Status.Hosts, n.Status.Ports, hosts, ports)
			}
			if check != nil {
				return check(n)
			}
			return nil
		})
		return n
	}
	routed := func(want api.ConditionStatus, reason string) func(*api.Network) error {
		return func(n *api.Network) error {
			c := n.Status.Condition(api.ConditionRouted)
			if c == nil || c.Status != want || c.Reason != reason {
				return fmt.Errorf("network %s: Routed %+v, want %s/%s", n.Metadata.Name, c, want, reason)
			}
			return nil
		}
	}
	lan := waitNetwork("lan", []string{"h1", "h2"}, []api.NetworkPort{
		port("db", 0, "h2", "10.1.0.10"), port("multi", 0, "h1", "10.0.0.12"), port("web", 0, "h1", "10.0.0.10"),
	}, routed(api.ConditionTrue, "Routed"))
	if r := lan.Status.Routers; len(r) != 2 || r[0].Host != "h1" || r[1].Host != "h2" || r[0].ExternalAddress == "" || r[1].ExternalAddress == "" || r[0].ExternalAddress == r[1].ExternalAddress {
		t.Fatalf("lan's routers %+v: want h1 and h2, each with its own external address", r)
	}
	other := waitNetwork("other", []string{"h1"}, []api.NetworkPort{port("multi", 1, "h1", "10.2.0.10")}, nil)
	if r := other.Status.Routers; len(r) != 1 || r[0] != (api.NetworkRouter{Host: "h1"}) || other.Status.Condition(api.ConditionRouted) != nil {
		t.Errorf("other's routers %+v, Routed %+v: want h1 without an external address, no condition", r, other.Status.Condition(api.ConditionRouted))
	}
	counts := func(kind, tenant, name string, allocated, available int) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			var a, f int
			switch x := o.get(kind, tenant, name).(type) {
			case *api.Subnet:
				a, f = x.Status.Allocated, x.Status.Available
			case *api.ExternalNetwork:
				a, f = x.Status.Allocated, x.Status.Available
			}
			if a != allocated || f != available {
				return fmt.Errorf("%s %s: allocated %d available %d, want %d and %d", kind, name, a, f, allocated, available)
			}
			return nil
		})
	}
	// 10.0.0.1-254 less the gateway is 253; three NICs hold addresses.
	counts("Subnet", "lab", "lan-a", 3, 250)
	counts("Subnet", "lab", "lan-b", 1, 252)
	counts("ExternalNetwork", "", "uplink", 2, 9)

	// A change costs what it touches: the VMs of lan moving do not
	// write other, and an agent's status write writes nothing.
	otherRV, subnetRV := other.Metadata.ResourceVersion, o.get("Subnet", "lab", "other-a").GetMetadata().ResourceVersion
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "idle", map[string]any{"spec": map[string]any{"host": "h2"}}, false); err != nil {
		t.Fatal(err)
	}
	lan = waitNetwork("lan", []string{"h1", "h2"}, []api.NetworkPort{
		port("db", 0, "h2", "10.1.0.10"), port("idle", 0, "h2", "10.0.0.11"), port("multi", 0, "h1", "10.0.0.12"), port("web", 0, "h1", "10.0.0.10"),
	}, nil)
	lanRV := lan.Metadata.ResourceVersion
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "web", map[string]any{"status": map[string]any{"phase": api.VMRunning}}, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if got := network("lan").Metadata.ResourceVersion; got != lanRV {
		t.Errorf("a VM's phase changing wrote its network (version %s to %s)", lanRV, got)
	}
	if got := network("other").Metadata.ResourceVersion; got != otherRV {
		t.Errorf("lan's VMs moving wrote network other (version %s to %s)", otherRV, got)
	}
	if got := o.get("Subnet", "lab", "other-a").GetMetadata().ResourceVersion; got != subnetRV {
		t.Errorf("lan's VMs moving wrote subnet other-a (version %s to %s)", subnetRV, got)
	}

	// A host that no longer carries the network gives its router's
	// address back.
	h2addr := lan.Status.Routers[1].ExternalAddress
	for _, vm := range []string{"db", "idle"} {
		if _, err := env.Admin.Delete(ctx, "VirtualMachine", "lab", vm); err != nil {
			t.Fatal(err)
		}
	}
	lan = waitNetwork("lan", []string{"h1"}, []api.NetworkPort{port("multi", 0, "h1", "10.0.0.12"), port("web", 0, "h1", "10.0.0.10")}, nil)
	if r := lan.Status.Routers; len(r) != 1 || r[0].Host != "h1" {
		t.Errorf("lan's routers after h2 emptied: %+v", r)
	}
	counts("ExternalNetwork", "", "uplink", 1, 10)
	counts("Subnet", "lab", "lan-b", 0, 253)
	// The freed address is free for a floating IP.
	f := nfip("lab", "pick", "uplink", "")
	f.Spec.Address = h2addr
	o.create(f)
}

// TestNetworkRoutedCondition: a router the external network cannot give
// an address gets none, and the network says why; it gets one as soon as
// an address is freed.
func TestNetworkRoutedCondition(t *testing.T) {
	env := networksEnv(t)
	env.Tenant("lab")
	o := netObjs{t, env}
	ctx := servertest.Ctx(t)
	o.create(
		&api.ExternalNetwork{TypeMeta: tmeta("ExternalNetwork"), Metadata: api.ObjectMeta{Name: "tiny"},
			Spec: api.ExternalNetworkSpec{CIDR: "192.0.2.0/24", RangeStart: "192.0.2.10", RangeEnd: "192.0.2.11"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h2"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}, Spec: api.NetworkSpec{ExternalNetwork: "tiny"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
		nfip("lab", "hog", "tiny", ""),
		nvm("lab", "a", "h1", api.VMNIC{Network: "lan"}),
		nvm("lab", "b", "h2", api.VMNIC{Network: "lan"}),
	)
	cond := func(status api.ConditionStatus, reason, msg string) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			n := o.get("Network", "lab", "lan").(*api.Network)
			c := n.Status.Condition(api.ConditionRouted)
			if c == nil || c.Status != status || c.Reason != reason || c.Message != msg {
				return fmt.Errorf("Routed %+v, routers %+v: want %s/%s %q", c, n.Status.Routers, status, reason, msg)
			}
			return nil
		})
	}
	cond(api.ConditionFalse, "NoFreeAddress", `external network "tiny" has no free address for the router on host h2`)
	if _, err := env.Admin.Delete(ctx, "FloatingIP", "lab", "hog"); err != nil {
		t.Fatal(err)
	}
	cond(api.ConditionTrue, "Routed", `routes out through external network "tiny"`)
	n := o.get("Network", "lab", "lan").(*api.Network)
	if r := n.Status.Routers; len(r) != 2 || r[0].ExternalAddress == "" || r[1].ExternalAddress == "" {
		t.Errorf("routers %+v: want both with an address once one was freed", r)
	}
	// An external network that does not exist is said to be missing.
	if _, err := env.Admin.Patch(ctx, "Network", "lab", "lan", map[string]any{"spec": map[string]any{"externalNetwork": "gone"}}, false); err != nil {
		t.Fatal(err)
	}
	cond(api.ConditionFalse, "ExternalNetworkNotFound", `external network "gone" not found: the network's VMs have no way out`)
}

// TestFloatingIPStatus: a floating IP is associated with its target NIC
// once the NIC is placed and routed (translated to the NIC's address on
// its host); a NIC taken by an older floating IP, and a VM of another
// tenant, are never its target.
func TestFloatingIPStatus(t *testing.T) {
	env := networksEnv(t)
	env.Tenant("lab")
	env.Tenant("other")
	o := netObjs{t, env}
	ctx := servertest.Ctx(t)
	mallory := env.User("mallory", "other", api.RoleTenantAdmin)
	o.create(
		&api.ExternalNetwork{TypeMeta: tmeta("ExternalNetwork"), Metadata: api.ObjectMeta{Name: "uplink"}, Spec: api.ExternalNetworkSpec{CIDR: "192.0.2.0/24"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "lan", Tenant: "lab"}, Spec: api.NetworkSpec{ExternalNetwork: "uplink"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "lan-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
		nfip("lab", "first", "uplink", "web"),
		nfip("lab", "second", "uplink", "web"),
		nfip("lab", "spare", "uplink", ""),
	)
	// other's tenant names lab's VM.
	if _, err := mallory.Create(ctx, nfip("other", "steal", "uplink", "web")); err != nil {
		t.Fatal(err)
	}
	fip := func(tenant, name string) *api.FloatingIP { return o.get("FloatingIP", tenant, name).(*api.FloatingIP) }
	want := func(tenant, name, phase, targetIP, host, reason string) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			f := fip(tenant, name)
			c := f.Status.Condition(api.ConditionAssociated)
			got := ""
			if c != nil {
				got = c.Reason
			}
			if f.Status.Phase != phase || f.Status.TargetIP != targetIP || f.Status.Host != host || got != reason {
				return fmt.Errorf("%s: phase %s targetIP %q host %q condition %+v; want %s %q %q %s", name, f.Status.Phase, f.Status.TargetIP, f.Status.Host, c, phase, targetIP, host, reason)
			}
			return nil
		})
	}
	want("lab", "first", api.FloatingIPAllocated, "", "", "TargetNotFound")
	want("lab", "spare", api.FloatingIPAllocated, "", "", "")
	o.create(nvm("lab", "web", "", api.VMNIC{Network: "lan", IP: "10.0.0.5"}))
	want("lab", "first", api.FloatingIPAllocated, "", "", "NotPlaced")
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", "lab", "web", map[string]any{"spec": map[string]any{"host": "h1"}}, false); err != nil {
		t.Fatal(err)
	}
	want("lab", "first", api.FloatingIPAssociated, "10.0.0.5", "h1", "Associated")
	want("lab", "second", api.FloatingIPAllocated, "", "", "TargetTaken")
	// Another tenant's VM of that name is not its target, in words that
	// do not tell it exists.
	want("other", "steal", api.FloatingIPAllocated, "", "", "TargetNotFound")
	if c := fip("other", "steal").Status.Condition(api.ConditionAssociated); c.Message != `VM "web" does not exist in tenant other` {
		t.Errorf("steal's condition: %q", c.Message)
	}
	// The older one goes: the NIC is the other's.
	if _, err := env.Admin.Delete(ctx, "FloatingIP", "lab", "first"); err != nil {
		t.Fatal(err)
	}
	want("lab", "second", api.FloatingIPAssociated, "10.0.0.5", "h1", "Associated")
	// Its network stops routing to the external network: no longer
	// associated.
	if _, err := env.Admin.Patch(ctx, "Network", "lab", "lan", map[string]any{"spec": map[string]any{"externalNetwork": nil}}, false); err != nil {
		t.Fatal(err)
	}
	want("lab", "second", api.FloatingIPAllocated, "", "", "NotRouted")
	want("other", "steal", api.FloatingIPAllocated, "", "", "TargetNotFound")

	// An external network of one site does not reach a VM elsewhere.
	o.create(
		&api.ExternalNetwork{TypeMeta: tmeta("ExternalNetwork"), Metadata: api.ObjectMeta{Name: "homelan"},
			Spec: api.ExternalNetworkSpec{CIDR: "198.51.100.0/24", Site: "home"}},
		&api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h2"}, Spec: api.HostSpec{Site: "away"}},
		&api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: "home", Tenant: "lab"}, Spec: api.NetworkSpec{ExternalNetwork: "homelan"}},
		&api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: "home-a", Tenant: "lab"}, Spec: api.SubnetSpec{Network: "home", CIDR: "10.5.0.0/24"}},
		nvm("lab", "away", "h2", api.VMNIC{Network: "home"}),
		nfip("lab", "far", "homelan", "away"),
	)
	want("lab", "far", api.FloatingIPAllocated, "", "", "HostNotServed")
}
