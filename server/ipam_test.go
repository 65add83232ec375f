package server_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/ipam"
	"hearth.dev/hearth/server/servertest"
)

func tmeta(kind string) api.TypeMeta { return api.TypeMeta{APIVersion: api.APIVersion, Kind: kind} }

func network(tenant, name, ext string) *api.Network {
	return &api.Network{TypeMeta: tmeta("Network"), Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.NetworkSpec{ExternalNetwork: ext}}
}

func subnet(tenant, name, net, cidr string) *api.Subnet {
	return &api.Subnet{TypeMeta: tmeta("Subnet"), Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.SubnetSpec{Network: net, CIDR: cidr}}
}

func nicVM(tenant, name string, nics ...api.VMNIC) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: tmeta("VirtualMachine"), Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.VirtualMachineSpec{Boot: api.VMBoot{From: api.BootFromNetwork}, NICs: nics}}
}

func externalNet(name, cidr, start, end string) *api.ExternalNetwork {
	return &api.ExternalNetwork{TypeMeta: tmeta("ExternalNetwork"), Metadata: api.ObjectMeta{Name: name},
		Spec: api.ExternalNetworkSpec{CIDR: cidr, RangeStart: start, RangeEnd: end}}
}

func floatingIP(tenant, name, ext, addr string) *api.FloatingIP {
	return &api.FloatingIP{TypeMeta: tmeta("FloatingIP"), Metadata: api.ObjectMeta{Name: name, Tenant: tenant},
		Spec: api.FloatingIPSpec{ExternalNetwork: ext, Address: addr}}
}

func mustCreate[T api.Object](t *testing.T, c *client.Client, obj T) T {
	t.Helper()
	out, err := c.Create(servertest.Ctx(t), obj)
	if err != nil {
		t.Fatalf("creating %s %s: %v", obj.GetTypeMeta().Kind, obj.GetMetadata().Name, err)
	}
	return out.(T)
}

// ipamKeys lists every allocation key in etcd with its value.
func ipamKeys(t *testing.T, env *servertest.Env) map[string]string {
	t.Helper()
	resp, err := env.Server.Etcd().Get(servertest.Ctx(t), "/hearth/ipam/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// wantFieldError checks that err is a 422 with exactly one field error at
// field whose detail contains want.
func wantFieldError(t *testing.T, err error, field, want string) *api.Status {
	t.Helper()
	st, ok := err.(*api.Status)
	if !ok || st.Reason != api.ReasonInvalid {
		t.Fatalf("got %v, want a 422 on %s", err, field)
	}
	if len(st.Fields) != 1 || st.Fields[0].Field != field || !strings.Contains(st.Fields[0].Detail, want) {
		t.Fatalf("got fields %+v, want one on %s containing %q", st.Fields, field, want)
	}
	return st
}

func ifaces(t *testing.T, obj api.Object) []api.VMInterfaceStatus {
	t.Helper()
	return obj.(*api.VirtualMachine).Status.Interfaces
}

// TestNICAddresses: a VM's NICs get addresses in its create transaction
// (lowest free in the DHCP range, or the static one asked for), every
// refusal names the field and writes nothing, deleting frees them for
// the next VM, and an update keeps what its NICs still ask for.
func TestNICAddresses(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	mustCreate(t, c, network("lab", "lan", ""))
	mustCreate(t, c, subnet("lab", "lan-a", "lan", "10.0.0.0/29")) // .1 gateway, .2 to .6 free
	mustCreate(t, c, network("lab", "two", ""))
	mustCreate(t, c, subnet("lab", "two-a", "two", "10.1.0.0/24"))
	mustCreate(t, c, subnet("lab", "two-b", "two", "10.2.0.0/24"))
	mustCreate(t, c, network("lab", "empty", ""))

	vm1 := mustCreate(t, c, nicVM("lab", "vm1", api.VMNIC{Network: "lan"}))
	vm2 := mustCreate(t, c, nicVM("lab", "vm2", api.VMNIC{Network: "lan", IP: "10.0.0.5"}))
	vm3 := mustCreate(t, c, nicVM("lab", "vm3", api.VMNIC{Network: "lan", MAC: "52:54:00:AB:CD:EF"}))
	for _, tc := range []struct {
		vm      api.Object
		ip, mac string
	}{{vm1, "10.0.0.2", ""}, {vm2, "10.0.0.5", ""}, {vm3, "10.0.0.3", "52:54:00:ab:cd:ef"}} {
		ifs := ifaces(t, tc.vm)
		if len(ifs) != 1 || ifs[0].IP != tc.ip || ifs[0].Network != "lan" || ifs[0].Subnet != "lan-a" || !strings.HasPrefix(ifs[0].MAC, "52:54:00:") {
			t.Fatalf("%s interfaces %+v, want lan/lan-a %s", tc.vm.GetMetadata().Name, ifs, tc.ip)
		}
		if tc.mac != "" && ifs[0].MAC != tc.mac {
			t.Errorf("%s MAC %s, want the static %s", tc.vm.GetMetadata().Name, ifs[0].MAC, tc.mac)
		}
	}
	vm1MAC := ifaces(t, vm1)[0].MAC

	before := ipamKeys(t, env)
	if len(before) != 6 {
		t.Fatalf("%d allocation keys for 3 NICs, want 6: %v", len(before), before)
	}
	for _, tc := range []struct {
		name         string
		nics         []api.VMNIC
		field, words string
	}{
		{"taken ip", []api.VMNIC{{Network: "lan", IP: "10.0.0.5"}}, "spec.nics[0].ip", "already used in subnet lan-a by VM vm2 (nics[0])"},
		{"gateway", []api.VMNIC{{Network: "lan", IP: "10.0.0.1"}}, "spec.nics[0].ip", "gateway"},
		{"network address", []api.VMNIC{{Network: "lan", IP: "10.0.0.0"}}, "spec.nics[0].ip", "network, broadcast or gateway"},
		{"broadcast", []api.VMNIC{{Network: "lan", IP: "10.0.0.7"}}, "spec.nics[0].ip", "network, broadcast or gateway"},
		{"outside", []api.VMNIC{{Network: "lan", IP: "10.9.0.1"}}, "spec.nics[0].ip", "outside subnet lan-a (10.0.0.0/29)"},
		{"taken mac", []api.VMNIC{{Network: "lan", MAC: vm1MAC}}, "spec.nics[0].mac", "already used on this network by VM vm1 (nics[0])"},
		{"gateway mac", []api.VMNIC{{Network: "lan", MAC: "02:68:67:00:10:00"}}, "spec.nics[0].mac", "Hearth keeps for its routers"},
		{"no network", []api.VMNIC{{Network: "nope"}}, "spec.nics[0].network", `network "nope" does not exist in tenant lab; create it`},
		{"no subnet", []api.VMNIC{{Network: "lan", Subnet: "nope"}}, "spec.nics[0].subnet", `subnet "nope" does not exist in tenant lab; create it first`},
		{"subnet elsewhere", []api.VMNIC{{Network: "lan", Subnet: "two-a"}}, "spec.nics[0].subnet", `subnet "two-a" is on network "two", not "lan"`},
		{"several subnets", []api.VMNIC{{Network: "two"}}, "spec.nics[0].subnet", `is required: network "two" has several subnets (two-a, two-b)`},
		{"none", []api.VMNIC{{Network: "empty"}}, "spec.nics[0].subnet", `network "empty" has no subnet`},
		{"same ip twice", []api.VMNIC{{Network: "two", Subnet: "two-a", IP: "10.1.0.9"}, {Network: "two", Subnet: "two-a", IP: "10.1.0.9"}}, "spec.nics[1].ip", "another NIC of this VM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, nicVM("lab", "bad", tc.nics...))
			wantFieldError(t, err, tc.field, tc.words)
			if _, err := c.Get(ctx, "VirtualMachine", "lab", "bad"); !api.IsNotFound(err) {
				t.Errorf("the refused VM exists: %v", err)
			}
			if after := ipamKeys(t, env); !mapsEqual(after, before) {
				t.Errorf("a refused create changed the allocations:\nbefore %v\nafter  %v", before, after)
			}
		})
	}

	// The range runs out, and deleting a VM frees its address for the
	// next one.
	mustCreate(t, c, nicVM("lab", "vm4", api.VMNIC{Network: "lan"}))
	mustCreate(t, c, nicVM("lab", "vm5", api.VMNIC{Network: "lan"}))
	_, err := c.Create(ctx, nicVM("lab", "vm6", api.VMNIC{Network: "lan"}))
	wantFieldError(t, err, "spec.nics[0].subnet", "subnet lan-a has no free address left in 10.0.0.1-10.0.0.6")
	if _, err := c.Delete(ctx, "VirtualMachine", "lab", "vm1"); err != nil {
		t.Fatal(err)
	}
	for k := range ipamKeys(t, env) {
		if strings.HasSuffix(k, "/10.0.0.2") || strings.HasSuffix(k, "/"+vm1MAC) {
			t.Errorf("deleting vm1 left %s", k)
		}
	}
	vm6 := mustCreate(t, c, nicVM("lab", "vm6", api.VMNIC{Network: "lan"}))
	if got := ifaces(t, vm6)[0].IP; got != "10.0.0.2" {
		t.Errorf("vm6 got %s, want vm1's freed 10.0.0.2", got)
	}

	// Updates: a NIC that still asks for what it has keeps it, wherever
	// it moves in the list; a changed one is reallocated; the rest go.
	vu := mustCreate(t, c, nicVM("lab", "vu", api.VMNIC{Network: "two", Subnet: "two-a"}))
	kept := ifaces(t, vu)[0]
	vu.Spec.NICs = []api.VMNIC{{Network: "two", Subnet: "two-b"}, {Network: "two", Subnet: "two-a"}}
	up, err := c.Update(ctx, vu)
	if err != nil {
		t.Fatal(err)
	}
	ifs := ifaces(t, up)
	if len(ifs) != 2 || ifs[1] != kept || ifs[0].Subnet != "two-b" || ifs[0].IP != "10.2.0.2" {
		t.Fatalf("after adding a NIC before the first: %+v, want nics[1] to keep %+v", ifs, kept)
	}
	keys := ipamKeys(t, env)
	if h := holderAt(t, keys, ipam.IPPrefix, "/10.1.0.2"); h.Name != "vu" || h.NIC != 1 {
		t.Errorf("the moved NIC's address records holder %+v, want vu nics[1]", h)
	}
	// A static address the NIC did not have replaces its old one.
	up.(*api.VirtualMachine).Spec.NICs[1].IP = "10.1.0.50"
	up, err = c.Update(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	if ifs := ifaces(t, up); ifs[1].IP != "10.1.0.50" || ifs[1].MAC != kept.MAC {
		t.Errorf("after asking for 10.1.0.50: %+v (MAC should stay %s)", ifs[1], kept.MAC)
	}
	if _, ok := findKey(ipamKeys(t, env), ipam.IPPrefix, "/10.1.0.2"); ok {
		t.Errorf("10.1.0.2 is still held after the NIC moved to 10.1.0.50")
	}
	// Dropping the NICs releases everything.
	up.(*api.VirtualMachine).Spec.NICs = nil
	up.(*api.VirtualMachine).Spec.Boot = api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{URL: "https://example.com/vmlinuz"}}
	up, err = c.Update(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	if ifs := ifaces(t, up); len(ifs) != 0 {
		t.Errorf("a VM without NICs has interfaces %+v", ifs)
	}
	for k, v := range ipamKeys(t, env) {
		if strings.Contains(v, `"name":"vu"`) {
			t.Errorf("%s is still held by vu after its NICs went", k)
		}
	}

	// status.interfaces is the server's: neither the VM's host nor an
	// admin's status write changes it.
	host := env.Host("h1")
	if _, err := c.Patch(ctx, "VirtualMachine", "lab", "vm2", map[string]any{"spec": map[string]any{"host": "h1"}}, false); err != nil {
		t.Fatal(err)
	}
	forged := []map[string]any{{"network": "lan", "subnet": "lan-a", "ip": "10.0.0.6", "mac": "52:54:00:00:00:66"}}
	for who, w := range map[string]*client.Client{"host": host, "admin": c} {
		if _, err := w.Patch(ctx, "VirtualMachine", "lab", "vm2", map[string]any{"status": map[string]any{"phase": "Running", "interfaces": forged}}, true); err != nil {
			t.Fatalf("%s's status write: %v", who, err)
		}
		got, _ := c.Get(ctx, "VirtualMachine", "lab", "vm2")
		if ifs := ifaces(t, got); len(ifs) != 1 || ifs[0] != ifaces(t, vm2)[0] || got.CommonStatus().Phase != "Running" {
			t.Errorf("after the %s wrote status.interfaces: %+v, want %+v kept", who, ifs, ifaces(t, vm2))
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func findKey(keys map[string]string, prefix, suffix string) (string, bool) {
	for k, v := range keys {
		if strings.HasPrefix(k, prefix) && strings.HasSuffix(k, suffix) {
			return v, true
		}
	}
	return "", false
}

func holderAt(t *testing.T, keys map[string]string, prefix, suffix string) ipam.Holder {
	t.Helper()
	v, ok := findKey(keys, prefix, suffix)
	if !ok {
		t.Fatalf("no key %s…%s", prefix, suffix)
	}
	var h ipam.Holder
	if err := json.Unmarshal([]byte(v), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestConcurrentNICAllocations: many VMs created at once on one subnet
// never share an IP or a MAC, every allocation is a key of its own, and
// deleting them all (at once too) leaves no allocation key in etcd.
func TestConcurrentNICAllocations(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	mustCreate(t, c, network("lab", "lan", ""))
	sn := mustCreate(t, c, subnet("lab", "lan-a", "lan", "10.5.0.0/24"))
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	vms := make([]*api.VirtualMachine, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := c.Create(ctx, nicVM("lab", fmt.Sprintf("vm%02d", i), api.VMNIC{Network: "lan"}))
			errs[i] = err
			if err == nil {
				vms[i] = o.(*api.VirtualMachine)
			}
		}()
	}
	wg.Wait()
	ips, macs := map[string]string{}, map[string]string{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create vm%02d: %v", i, err)
		}
		ifc := vms[i].Status.Interfaces[0]
		if o, dup := ips[ifc.IP]; dup {
			t.Errorf("%s and %s both got %s", o, vms[i].Metadata.Name, ifc.IP)
		}
		if o, dup := macs[ifc.MAC]; dup {
			t.Errorf("%s and %s both got %s", o, vms[i].Metadata.Name, ifc.MAC)
		}
		ips[ifc.IP], macs[ifc.MAC] = vms[i].Metadata.Name, vms[i].Metadata.Name
	}
	// The stored VMs agree with the keys, one each.
	keys := ipamKeys(t, env)
	for ip, name := range ips {
		h := holderAt(t, keys, ipam.IPPrefix+sn.Metadata.UID+"/", "/"+ip)
		if h.Name != name {
			t.Errorf("%s is recorded as %s's, but %s has it", ip, h.Name, name)
		}
	}
	if len(keys) != 2*n {
		t.Errorf("%d allocation keys for %d NICs, want %d", len(keys), n, 2*n)
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Delete(ctx, "VirtualMachine", "lab", fmt.Sprintf("vm%02d", i)); err != nil {
				t.Errorf("delete vm%02d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if left := ipamKeys(t, env); len(left) != 0 {
		t.Errorf("after deleting every VM, etcd still holds %v", left)
	}
}

// TestConcurrentFloatingIPs: floating IPs created at once, by two
// tenants, never share an address, and none is left held once they are
// deleted.
func TestConcurrentFloatingIPs(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	env.Tenant("b")
	ctx := servertest.Ctx(t)
	mustCreate(t, env.Admin, externalNet("uplink", "192.0.2.0/24", "192.0.2.100", "192.0.2.140"))
	users := []*client.Client{env.User("alice", "a", api.RoleTenantAdmin), env.User("bob", "b", api.RoleTenantAdmin)}
	const n = 30
	var wg sync.WaitGroup
	got := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := []string{"a", "b"}[i%2]
			o, err := users[i%2].Create(ctx, floatingIP(tenant, fmt.Sprintf("f%02d", i), "uplink", ""))
			if err != nil {
				t.Errorf("f%02d: %v", i, err)
				return
			}
			got[i] = o.(*api.FloatingIP).Status.Address
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, a := range got {
		if j, dup := seen[a]; dup && a != "" {
			t.Errorf("f%02d and f%02d both got %s", j, i, a)
		}
		seen[a] = i
	}
	if keys := ipamKeys(t, env); len(keys) != n {
		t.Errorf("%d keys for %d floating IPs", len(keys), n)
	}
	for i := range n {
		tenant := []string{"a", "b"}[i%2]
		if _, err := env.Admin.Delete(ctx, "FloatingIP", tenant, fmt.Sprintf("f%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if left := ipamKeys(t, env); len(left) != 0 {
		t.Errorf("left after deleting every floating IP: %v", left)
	}
}

// TestDeleteInUse: a subnet or network whose addresses VMs hold cannot be
// deleted (409 naming the VMs), and a delete racing a VM's create never
// lets both succeed: there is never an address in a subnet that is gone.
func TestDeleteInUse(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	mustCreate(t, c, network("lab", "lan", ""))
	mustCreate(t, c, subnet("lab", "lan-a", "lan", "10.0.0.0/24"))
	mustCreate(t, c, nicVM("lab", "web", api.VMNIC{Network: "lan"}))
	mustCreate(t, c, nicVM("lab", "db", api.VMNIC{Network: "lan"}))
	for kind, name := range map[string]string{"Subnet": "lan-a", "Network": "lan"} {
		_, err := c.Delete(ctx, kind, "lab", name)
		if !api.IsInUse(err) || !strings.Contains(err.Error(), "in use by VMs db, web") || err.(*api.Status).Code != 409 {
			t.Errorf("deleting %s %s while VMs use it: %v, want a 409 naming db and web", kind, name, err)
		}
		if _, err := c.Get(ctx, kind, "lab", name); err != nil {
			t.Errorf("%s %s is gone after a refused delete: %v", kind, name, err)
		}
	}
	for _, vm := range []string{"web", "db"} {
		if _, err := c.Delete(ctx, "VirtualMachine", "lab", vm); err != nil {
			t.Fatal(err)
		}
	}
	for _, kind := range []string{"Subnet", "Network"} {
		name := map[string]string{"Subnet": "lan-a", "Network": "lan"}[kind]
		if _, err := c.Delete(ctx, kind, "lab", name); err != nil {
			t.Errorf("deleting the unused %s %s: %v", kind, name, err)
		}
	}

	// Races: a VM created on a subnet (or network) while it is deleted.
	mustCreate(t, c, network("lab", "race", ""))
	for round := range 12 {
		snName, netName := fmt.Sprintf("s%d", round), "race"
		victim := "Subnet"
		if round%2 == 1 {
			netName = fmt.Sprintf("n%d", round)
			mustCreate(t, c, network("lab", netName, ""))
			victim = "Network"
		}
		sn := mustCreate(t, c, subnet("lab", snName, netName, fmt.Sprintf("10.%d.0.0/24", 100+round)))
		var createErr, deleteErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, createErr = c.Create(ctx, nicVM("lab", fmt.Sprintf("racer%d", round), api.VMNIC{Network: netName, Subnet: snName}))
		}()
		go func() {
			defer wg.Done()
			name := snName
			if victim == "Network" {
				name = netName
			}
			_, deleteErr = c.Delete(ctx, victim, "lab", name)
		}()
		wg.Wait()
		switch {
		case createErr == nil && deleteErr == nil:
			t.Fatalf("round %d: the VM was created and its %s deleted", round, victim)
		case createErr == nil:
			if !api.IsInUse(deleteErr) {
				t.Errorf("round %d: delete of %s failed with %v, want InUse", round, victim, deleteErr)
			}
		case deleteErr == nil:
			if api.ReasonOf(createErr) != api.ReasonInvalid {
				t.Errorf("round %d: create failed with %v, want a 422", round, createErr)
			}
			for k := range ipamKeys(t, env) {
				if strings.HasPrefix(k, ipam.IPPrefix+sn.Metadata.UID+"/") {
					t.Errorf("round %d: %s is held in a deleted subnet", round, k)
				}
			}
		default:
			t.Errorf("round %d: both failed: create %v, delete %v", round, createErr, deleteErr)
		}
	}
}

// TestDryRunAllocatesNothing: dry runs of creates, updates and deletes
// answer with the addresses the write would hold (or its refusal) and
// leave every allocation key, and etcd's revision, as they were.
func TestDryRunAllocatesNothing(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	dry := c.DryRun()
	user := env.User("dev", "lab", api.RoleTenantAdmin)
	mustCreate(t, c, externalNet("uplink", "192.0.2.0/24", "", ""))
	mustCreate(t, c, network("lab", "lan", "uplink"))
	mustCreate(t, c, subnet("lab", "lan-a", "lan", "10.0.0.0/24"))
	mustCreate(t, c, nicVM("lab", "web", api.VMNIC{Network: "lan"}))
	mustCreate(t, user, floatingIP("lab", "f1", "uplink", ""))

	rev := func() int64 {
		r, err := env.Server.Etcd().Get(ctx, "/hearth/none")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	before, rev0 := ipamKeys(t, env), rev()
	steps := map[string]func() (api.Object, error){
		"create VM": func() (api.Object, error) {
			return dry.Create(ctx, nicVM("lab", "db", api.VMNIC{Network: "lan"}))
		},
		"update VM": func() (api.Object, error) {
			return dry.Patch(ctx, "VirtualMachine", "lab", "web", map[string]any{"spec": map[string]any{"nics": []map[string]any{{"network": "lan", "ip": "10.0.0.77"}}}}, false)
		},
		"create floating IP": func() (api.Object, error) {
			return user.DryRun().Create(ctx, floatingIP("lab", "f2", "uplink", ""))
		},
		"delete VM":          func() (api.Object, error) { return dry.Delete(ctx, "VirtualMachine", "lab", "web") },
		"delete floating IP": func() (api.Object, error) { return user.DryRun().Delete(ctx, "FloatingIP", "lab", "f1") },
	}
	for name, step := range steps {
		out, err := step()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		switch o := out.(type) {
		case *api.VirtualMachine:
			if name == "create VM" && (len(o.Status.Interfaces) != 1 || o.Status.Interfaces[0].IP != "10.0.0.3") {
				t.Errorf("%s answered interfaces %+v, want the address it would get (10.0.0.3)", name, o.Status.Interfaces)
			}
			if name == "update VM" && o.Status.Interfaces[0].IP != "10.0.0.77" {
				t.Errorf("%s answered interfaces %+v, want 10.0.0.77", name, o.Status.Interfaces)
			}
		case *api.FloatingIP:
			if o.Status.Address == "" {
				t.Errorf("%s answered no address", name)
			}
		}
		if after := ipamKeys(t, env); !mapsEqual(after, before) || rev() != rev0 {
			t.Errorf("a dry run of %s changed etcd:\nbefore %v\nafter  %v", name, before, after)
		}
	}
	// A dry run fails where the write would.
	if _, err := dry.Delete(ctx, "Subnet", "lab", "lan-a"); !api.IsInUse(err) {
		t.Errorf("dry run of deleting a used subnet: %v, want InUse", err)
	}
	_, err := dry.Create(ctx, nicVM("lab", "db", api.VMNIC{Network: "lan", IP: "10.0.0.2"}))
	wantFieldError(t, err, "spec.nics[0].ip", "already used")
}

// TestNICTenantIsolation: NICs name networks and subnets of their VM's
// tenant only: another tenant's are not found, in words that do not tell
// they exist; and tenants with the same CIDR, MACs and addresses never
// collide.
func TestNICTenantIsolation(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	env.Tenant("b")
	ctx := servertest.Ctx(t)
	ua := env.User("alice", "a", api.RoleTenantAdmin)
	ub := env.User("bob", "b", api.RoleTenantAdmin)
	mustCreate(t, ub, network("b", "secret", ""))
	mustCreate(t, ub, subnet("b", "secret-a", "secret", "10.0.0.0/24"))
	bvm := mustCreate(t, ub, nicVM("b", "bvm", api.VMNIC{Network: "secret", IP: "10.0.0.9"}))
	mustCreate(t, ua, network("a", "mine", ""))
	mustCreate(t, ua, subnet("a", "mine-a", "mine", "10.0.0.0/24"))

	// Naming b's network or subnet is exactly naming one that exists
	// nowhere.
	for _, tc := range []struct{ field, real, none string }{
		{"spec.nics[0].network", "secret", "nowhere"},
		{"spec.nics[0].subnet", "secret-a", "nowhere-a"},
	} {
		var msgs []string
		for _, name := range []string{tc.real, tc.none} {
			nic := api.VMNIC{Network: name}
			if strings.HasSuffix(tc.field, "subnet") {
				nic = api.VMNIC{Network: "mine", Subnet: name}
			}
			_, err := ua.Create(ctx, nicVM("a", "probe", nic))
			st := wantFieldError(t, err, tc.field, "does not exist in tenant a")
			msgs = append(msgs, strings.ReplaceAll(st.Message, name, "NAME"))
		}
		if msgs[0] != msgs[1] {
			t.Errorf("another tenant's name is refused differently from a missing one:\n%s\n%s", msgs[0], msgs[1])
		}
	}
	// The same address and MAC in another tenant's network are free here.
	avm := mustCreate(t, ua, nicVM("a", "avm", api.VMNIC{Network: "mine", IP: "10.0.0.9", MAC: bvm.Status.Interfaces[0].MAC}))
	if got := avm.Status.Interfaces[0]; got.IP != "10.0.0.9" || got.MAC != bvm.Status.Interfaces[0].MAC {
		t.Errorf("a's VM got %+v, want b's IP and MAC (other tenant, other network)", got)
	}
	// Tenants cannot delete each other's subnets, in use or not: 403
	// before any in-use check could tell them something.
	if _, err := ua.Delete(ctx, "Subnet", "b", "secret-a"); !api.IsForbidden(err) {
		t.Errorf("a deleting b's subnet: %v, want 403", err)
	}
}

// TestFloatingIPAddresses: a floating IP gets the lowest free address of
// its external network's range, or the static one if it is free and in
// the range; refusals tell a tenant nothing of the external network (its
// range) or of who holds an address; deleting frees it; an external
// network with addresses held is not deleted.
func TestFloatingIPAddresses(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Tenant("other")
	ctx := servertest.Ctx(t)
	c := env.Admin
	ua := env.User("alice", "lab", api.RoleTenantAdmin)
	uo := env.User("oscar", "other", api.RoleTenantAdmin)
	mustCreate(t, c, externalNet("uplink", "192.0.2.0/24", "192.0.2.10", "192.0.2.12"))

	f1 := mustCreate(t, ua, floatingIP("lab", "f1", "uplink", ""))
	f2 := mustCreate(t, ua, floatingIP("lab", "f2", "uplink", "192.0.2.12"))
	if f1.Status.Address != "192.0.2.10" || f2.Status.Address != "192.0.2.12" || f1.Status.Phase != api.FloatingIPAllocated {
		t.Fatalf("f1 %s (%s), f2 %s: want 192.0.2.10 (Allocated) and the static 192.0.2.12", f1.Status.Address, f1.Status.Phase, f2.Status.Address)
	}
	for _, tc := range []struct {
		name, tenant, ext, addr string
		field, words            string
	}{
		{"taken", "lab", "uplink", "192.0.2.12", "spec.address", "192.0.2.12 is already in use; leave it empty"},
		{"taken by another tenant", "other", "uplink", "192.0.2.10", "spec.address", "192.0.2.10 is already in use; leave it empty"},
		{"outside the range", "lab", "uplink", "192.0.2.200", "spec.address", `192.0.2.200 is not an address external network "uplink" hands out`},
		{"gateway", "lab", "uplink", "192.0.2.1", "spec.address", "is not an address"},
		{"missing", "lab", "nope", "", "spec.externalNetwork", `external network "nope" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := map[string]*client.Client{"lab": ua, "other": uo}[tc.tenant]
			_, err := u.Create(ctx, floatingIP(tc.tenant, "probe", tc.ext, tc.addr))
			st := wantFieldError(t, err, tc.field, tc.words)
			for _, secret := range []string{"f1", "f2", "192.0.2.11", "192.0.2.0/24"} {
				if strings.Contains(st.Message, secret) {
					t.Errorf("the refusal tells a tenant %q: %s", secret, st.Message)
				}
			}
			if tc.tenant == "other" && strings.Contains(st.Message, "lab") {
				t.Errorf("the refusal names the holder's tenant: %s", st.Message)
			}
		})
	}
	f3 := mustCreate(t, uo, floatingIP("other", "f3", "uplink", ""))
	if f3.Status.Address != "192.0.2.11" {
		t.Errorf("f3 got %s, want the last free 192.0.2.11", f3.Status.Address)
	}
	_, err := ua.Create(ctx, floatingIP("lab", "f4", "uplink", ""))
	wantFieldError(t, err, "spec.externalNetwork", `external network "uplink" has no free address left`)
	// Tenants may name it but not read it.
	if _, err := ua.Get(ctx, "ExternalNetwork", "", "uplink"); !api.IsForbidden(err) {
		t.Errorf("a tenant read the external network: %v", err)
	}
	// The address is the server's: a status write keeps it.
	if _, err := c.Patch(ctx, "FloatingIP", "lab", "f1", map[string]any{"status": map[string]any{"address": "192.0.2.99"}}, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(ctx, "FloatingIP", "lab", "f1"); got.(*api.FloatingIP).Status.Address != "192.0.2.10" {
		t.Errorf("a status write moved f1 to %s", got.(*api.FloatingIP).Status.Address)
	}

	_, err = c.Delete(ctx, "ExternalNetwork", "", "uplink")
	if !api.IsInUse(err) || !strings.Contains(err.Error(), "floating IP lab/f1, floating IP lab/f2, floating IP other/f3") {
		t.Errorf("deleting the used external network: %v, want a 409 naming the floating IPs", err)
	}
	if _, err := ua.Delete(ctx, "FloatingIP", "lab", "f1"); err != nil {
		t.Fatal(err)
	}
	f4 := mustCreate(t, ua, floatingIP("lab", "f4", "uplink", ""))
	if f4.Status.Address != "192.0.2.10" {
		t.Errorf("f4 got %s, want f1's freed 192.0.2.10", f4.Status.Address)
	}
	for _, f := range []struct{ tenant, name string }{{"lab", "f2"}, {"lab", "f4"}, {"other", "f3"}} {
		if _, err := c.Delete(ctx, "FloatingIP", f.tenant, f.name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, "ExternalNetwork", "", "uplink"); err != nil {
		t.Errorf("deleting the unused external network: %v", err)
	}
	if left := ipamKeys(t, env); len(left) != 0 {
		t.Errorf("allocation keys left: %v", left)
	}
}

// TestFloatingIPTargets: a floating IP may point only at a NIC of the
// tenant's own VM whose network routes to its external network, and at
// most one floating IP at a NIC; a name that is another tenant's VM
// finds nothing.
func TestFloatingIPTargets(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Tenant("other")
	ctx := servertest.Ctx(t)
	c := env.Admin
	ua := env.User("alice", "lab", api.RoleTenantAdmin)
	mustCreate(t, c, externalNet("uplink", "192.0.2.0/24", "", ""))
	mustCreate(t, c, externalNet("backup", "198.51.100.0/24", "", ""))
	mustCreate(t, ua, network("lab", "routed", "uplink"))
	mustCreate(t, ua, subnet("lab", "routed-a", "routed", "10.0.0.0/24"))
	mustCreate(t, ua, network("lab", "plain", ""))
	mustCreate(t, ua, subnet("lab", "plain-a", "plain", "10.1.0.0/24"))
	mustCreate(t, ua, nicVM("lab", "web", api.VMNIC{Network: "routed"}, api.VMNIC{Network: "plain"}))
	mustCreate(t, c, network("other", "theirs", "uplink"))
	mustCreate(t, c, subnet("other", "theirs-a", "theirs", "10.0.0.0/24"))
	mustCreate(t, c, nicVM("other", "victim", api.VMNIC{Network: "theirs"}))

	target := func(name, ext, vm string, nic int) *api.FloatingIP {
		f := floatingIP("lab", name, ext, "")
		f.Spec.Target = &api.FloatingIPTarget{VM: vm, NIC: nic}
		return f
	}
	for _, tc := range []struct {
		name         string
		f            *api.FloatingIP
		field, words string
	}{
		{"unrouted network", target("x", "uplink", "web", 1), "spec.target", `VM "web" nics[1] is on network "plain", which routes to no external network, not "uplink"`},
		{"other external network", target("x", "backup", "web", 0), "spec.target", `which routes to external network "uplink", not "backup"`},
		{"no such NIC", target("x", "uplink", "web", 2), "spec.target.nic", `VM "web" has 2 NICs`},
	} {
		_, err := ua.Create(ctx, tc.f)
		wantFieldError(t, err, tc.field, tc.words)
	}
	if left := ipamKeys(t, env); len(left) != 6 {
		t.Errorf("refused floating IPs left allocations (want the 3 NICs' 6 keys): %v", left)
	}
	mustCreate(t, ua, target("web", "uplink", "web", 0))
	_, err := ua.Create(ctx, target("web2", "uplink", "web", 0))
	wantFieldError(t, err, "spec.target", `VM "web" nics[0] already has floating IP "web"`)
	// Another tenant's VM is not found in this one: accepted as a name
	// that names nothing yet (the controller never associates it).
	if _, err := ua.Create(ctx, target("steal", "uplink", "victim", 0)); err != nil {
		t.Errorf("a floating IP naming a VM the tenant does not have: %v", err)
	}
}

// TestRouterAddresses: a network's routers get addresses on its external
// network when its status lists them, keep them, and give them back when
// the host goes, the external network changes or the network is deleted;
// no status writer can set one; hosts outside the external network's
// site get none; the VNI stays the allocator's.
func TestRouterAddresses(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	mustCreate(t, c, externalNet("uplink", "192.0.2.0/24", "192.0.2.10", "192.0.2.20"))
	x2 := externalNet("homelan", "198.51.100.0/24", "", "")
	x2.Spec.Site = "home"
	mustCreate(t, c, x2)
	mustCreate(t, c, &api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h1"}, Spec: api.HostSpec{Site: "home"}})
	mustCreate(t, c, &api.Host{TypeMeta: tmeta("Host"), Metadata: api.ObjectMeta{Name: "h2"}, Spec: api.HostSpec{Site: "away"}})
	n := mustCreate(t, c, network("lab", "lan", "uplink"))
	vni := n.Status.VNI

	setRouters := func(hosts ...string) *api.Network {
		t.Helper()
		var rs []map[string]any
		for _, h := range hosts {
			rs = append(rs, map[string]any{"host": h, "externalAddress": "192.0.2.99"}) // ignored
		}
		out, err := c.Patch(ctx, "Network", "lab", "lan", map[string]any{"status": map[string]any{"routers": rs, "vni": 7}}, true)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*api.Network)
	}
	addrs := func(n *api.Network) map[string]string {
		out := map[string]string{}
		for _, r := range n.Status.Routers {
			out[r.Host] = r.ExternalAddress
		}
		return out
	}
	got := setRouters("h1", "h2")
	if a := addrs(got); a["h1"] != "192.0.2.10" || a["h2"] != "192.0.2.11" || got.Status.VNI != vni {
		t.Fatalf("routers %v, VNI %d: want h1 192.0.2.10, h2 192.0.2.11, VNI %d", a, got.Status.VNI, vni)
	}
	if h := holderAt(t, ipamKeys(t, env), ipam.ExternalPrefix, "/192.0.2.11"); h.Kind != "Network" || h.Name != "lan" || h.Host != "h2" {
		t.Errorf("192.0.2.11 is held by %+v, want network lan's router on h2", h)
	}
	got = setRouters("h2")
	if a := addrs(got); len(a) != 1 || a["h2"] != "192.0.2.11" {
		t.Errorf("after h1 went: %v, want h2 keeping 192.0.2.11", a)
	}
	if _, held := findKey(ipamKeys(t, env), ipam.ExternalPrefix, "/192.0.2.10"); held {
		t.Errorf("h1's address is still held after its router went")
	}
	// A spec write keeps them; a new external network moves them there,
	// for the hosts it reaches.
	got = setRouters("h1", "h2")
	if _, err := c.Patch(ctx, "Network", "lab", "lan", map[string]any{"spec": map[string]any{"description": "x"}}, false); err != nil {
		t.Fatal(err)
	}
	if o, _ := c.Get(ctx, "Network", "lab", "lan"); !mapsEqual(addrs(o.(*api.Network)), addrs(got)) {
		t.Errorf("a spec write changed the routers: %v, was %v", addrs(o.(*api.Network)), addrs(got))
	}
	o, err := c.Patch(ctx, "Network", "lab", "lan", map[string]any{"spec": map[string]any{"externalNetwork": "homelan"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if a := addrs(o.(*api.Network)); a["h1"] != "198.51.100.2" || a["h2"] != "" {
		t.Errorf("on homelan (site home): %v, want h1 198.51.100.2 and nothing for h2 (site away)", a)
	}
	for k := range ipamKeys(t, env) {
		if strings.Contains(k, "/192.0.2.") {
			t.Errorf("%s is still held after the network left uplink", k)
		}
	}
	// A network with no NICs goes, and its routers' addresses with it.
	if _, err := c.Delete(ctx, "Network", "lab", "lan"); err != nil {
		t.Fatal(err)
	}
	if left := ipamKeys(t, env); len(left) != 0 {
		t.Errorf("after deleting the network: %v", left)
	}
}

// TestFloatingIPQuota: a tenant's quota caps its floating IPs.
func TestFloatingIPQuota(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	c := env.Admin
	mustCreate(t, c, &api.Tenant{TypeMeta: tmeta("Tenant"), Metadata: api.ObjectMeta{Name: "lab"}, Spec: api.TenantSpec{Quota: api.Quota{FloatingIPs: 1}}})
	ua := env.User("alice", "lab", api.RoleTenantAdmin)
	mustCreate(t, c, externalNet("uplink", "192.0.2.0/24", "", ""))
	mustCreate(t, ua, floatingIP("lab", "f1", "uplink", ""))
	_, err := ua.Create(ctx, floatingIP("lab", "f2", "uplink", ""))
	if !api.IsQuotaExceeded(err) || !strings.Contains(err.Error(), "quota exceeded for floatingIPs: requested 1, used 1 of 1") {
		t.Errorf("second floating IP: %v, want QuotaExceeded for floatingIPs", err)
	}
	if left := ipamKeys(t, env); len(left) != 1 {
		t.Errorf("the refused floating IP holds an address: %v", left)
	}
}
