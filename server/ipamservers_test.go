package server_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/etcd"
	"hearth.dev/hearth/server/ipam"
	"hearth.dev/hearth/server/servertest"
)

// secondServer starts another server of env's cluster (on env's etcd,
// without controllers) and returns an admin client of it.
func secondServer(t *testing.T, env *servertest.Env) *client.Client {
	t.Helper()
	s, err := server.Start(servertest.Ctx(t), server.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", DisableControllers: true,
		Etcd: etcd.Config{Endpoints: []string{env.EtcdURL}}})
	if err != nil {
		t.Fatalf("a second server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := client.New(&client.Context{Name: "second", Server: s.URL(), CertificateAuthority: string(s.CAPEM()), Token: tokenOf(t, env.Admin)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNICsAcrossServers: VMs created at once through two servers of one
// cluster, each with its own hints of what the subnet holds, never share
// an address; addresses deleted through one server are given again by
// the other; an explicit address is honoured; and once the range is
// full, the next create is refused naming spec.nics[0].subnet, while
// every address of the range is held exactly once.
func TestNICsAcrossServers(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	servers := []*client.Client{env.Admin, secondServer(t, env)}
	mustCreate(t, env.Admin, network("lab", "lan", ""))
	sn := subnet("lab", "lan-a", "lan", "10.7.0.0/24")
	sn.Spec.DHCP.RangeStart, sn.Spec.DHCP.RangeEnd = "10.7.0.10", "10.7.0.129" // 120 addresses
	sn = mustCreate(t, env.Admin, sn)
	const size = 120

	// create makes VMs named prefix0..prefix(n-1) at once, through both
	// servers in turn, and returns them by name.
	create := func(prefix string, n int) map[string]*api.VirtualMachine {
		t.Helper()
		var mu sync.Mutex
		var wg sync.WaitGroup
		out := map[string]*api.VirtualMachine{}
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("%s%03d", prefix, i)
				o, err := servers[i%2].Create(ctx, nicVM("lab", name, api.VMNIC{Network: "lan"}))
				if err != nil {
					t.Errorf("create %s through server %d: %v", name, i%2, err)
					return
				}
				mu.Lock()
				out[name] = o.(*api.VirtualMachine)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		return out
	}
	// check: the VMs stored hold distinct IPs and MACs, each recorded
	// by its own key, and no key is held by no VM.
	check := func(wantVMs int) map[string]string {
		t.Helper()
		l, _, err := env.Admin.List(ctx, "VirtualMachine", "lab", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ips, macs := map[string]string{}, map[string]string{}
		for _, o := range l {
			vm := o.(*api.VirtualMachine)
			ifc := vm.Status.Interfaces[0]
			if other, dup := ips[ifc.IP]; dup {
				t.Errorf("%s and %s both have %s", other, vm.Metadata.Name, ifc.IP)
			}
			if other, dup := macs[ifc.MAC]; dup {
				t.Errorf("%s and %s both have %s", other, vm.Metadata.Name, ifc.MAC)
			}
			ips[ifc.IP], macs[ifc.MAC] = vm.Metadata.Name, vm.Metadata.Name
		}
		if len(ips) != wantVMs {
			t.Errorf("%d VMs with an address, want %d", len(ips), wantVMs)
		}
		keys := ipamKeys(t, env)
		held := 0
		for k, v := range keys {
			ip, ok := strings.CutPrefix(k, ipam.IPPrefix+sn.Metadata.UID+"/")
			if !ok {
				continue
			}
			held++
			var h ipam.Holder
			_ = json.Unmarshal([]byte(v), &h)
			if ips[ip] != h.Name {
				t.Errorf("%s is recorded as %s's, but %q has it", ip, h.Name, ips[ip])
			}
		}
		if held != wantVMs {
			t.Errorf("%d address keys, want %d", held, wantVMs)
		}
		if t.Failed() {
			t.FailNow()
		}
		return ips
	}

	first := create("a", 80)
	check(80)

	// Delete 30 through the second server: the first one's hints do not
	// see it.
	var freed []string
	for name, vm := range first {
		if len(freed) == 30 {
			break
		}
		if _, err := servers[1].Delete(ctx, "VirtualMachine", "lab", name); err != nil {
			t.Fatal(err)
		}
		freed = append(freed, vm.Status.Interfaces[0].IP)
	}
	// An explicit address, one just freed, asked for through the first.
	o, err := env.Admin.Create(ctx, nicVM("lab", "static", api.VMNIC{Network: "lan", IP: freed[0]}))
	if err != nil {
		t.Fatalf("asking for %s, freed a moment ago on the other server: %v", freed[0], err)
	}
	if got := o.(*api.VirtualMachine).Status.Interfaces[0].IP; got != freed[0] {
		t.Fatalf("asked for %s, got %s", freed[0], got)
	}
	// 51 held: the rest of the range is 69, 29 of them freed above, so
	// filling it gives every freed address again.
	create("b", size-51)
	ips := check(size)
	for _, a := range freed {
		if ips[a] == "" {
			t.Errorf("%s was freed and the range filled, but no VM has it", a)
		}
	}
	for a := netip.MustParseAddr("10.7.0.10"); a.Compare(netip.MustParseAddr("10.7.0.129")) <= 0; a = a.Next() {
		if ips[a.String()] == "" {
			t.Errorf("the range is full, but no VM has %s", a)
		}
	}
	for i, c := range servers {
		_, err := c.Create(ctx, nicVM("lab", fmt.Sprintf("over%d", i), api.VMNIC{Network: "lan"}))
		wantFieldError(t, err, "spec.nics[0].subnet", "subnet lan-a has no free address left in 10.7.0.10-10.7.0.129")
	}
	check(size)
}

// TestNetworkAnchor: a VM's create reads the small anchor key its
// network's hooks keep, not the Network: it is written with the
// network, says when the network is being deleted (a NIC on it is then
// refused), is not touched by status writes (so they never make a
// create retry), and is deleted with the network, whose name can then
// be used again with a new uid. A network stored without one (before
// anchors) still takes NICs, and gets its anchor at its next update.
func TestNetworkAnchor(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	c := env.Admin
	ec := env.Server.Etcd()
	key := ipam.AnchorPrefix + "lab/lan"
	anchor := func() (string, int64) {
		t.Helper()
		resp, err := ec.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return "", 0
		}
		return string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
	}
	macUID := func(vm *api.VirtualMachine) string {
		t.Helper()
		for k := range ipamKeys(t, env) {
			if rest, ok := strings.CutPrefix(k, ipam.MACPrefix); ok && strings.HasSuffix(rest, "/"+vm.Status.Interfaces[0].MAC) {
				return strings.TrimSuffix(rest, "/"+vm.Status.Interfaces[0].MAC)
			}
		}
		t.Fatalf("no MAC key for %s", vm.Metadata.Name)
		return ""
	}

	n := mustCreate(t, c, network("lab", "lan", ""))
	mustCreate(t, c, subnet("lab", "lan-a", "lan", "10.8.0.0/24"))
	if v, _ := anchor(); v != fmt.Sprintf(`{"uid":%q}`, n.Metadata.UID) {
		t.Fatalf("anchor %q after create, want the network's uid", v)
	}
	vm := mustCreate(t, c, nicVM("lab", "one", api.VMNIC{Network: "lan"}))
	if got := macUID(vm); got != n.Metadata.UID {
		t.Errorf("MAC held under %s, want the network's uid %s", got, n.Metadata.UID)
	}

	// A status write, with every port on the network, leaves it alone.
	_, rev := anchor()
	n.Status.Ports = []api.NetworkPort{{VM: "one", Host: "h1", MAC: vm.Status.Interfaces[0].MAC, IPs: []string{vm.Status.Interfaces[0].IP}}}
	n.Status.Hosts = []string{"h1"}
	if _, err := c.UpdateStatus(ctx, n); err != nil {
		t.Fatal(err)
	}
	if _, r := anchor(); r != rev {
		t.Errorf("a status write moved the anchor from revision %d to %d", rev, r)
	}

	// A network stored before anchors: NICs still go on it, under its
	// uid, and its next update writes the anchor.
	if _, err := ec.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	vm2 := mustCreate(t, c, nicVM("lab", "two", api.VMNIC{Network: "lan"}))
	if got := macUID(vm2); got != n.Metadata.UID {
		t.Errorf("without an anchor: MAC held under %s, want %s", got, n.Metadata.UID)
	}
	cur, err := c.Get(ctx, "Network", "lab", "lan")
	if err != nil {
		t.Fatal(err)
	}
	cur.GetMetadata().Labels = map[string]string{"touched": "yes"}
	if _, err := c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if v, _ := anchor(); v != fmt.Sprintf(`{"uid":%q}`, n.Metadata.UID) {
		t.Fatalf("anchor %q after an update of a network without one, want its uid", v)
	}

	// Being deleted (a finalizer holds it): NICs are refused.
	cur, _ = c.Get(ctx, "Network", "lab", "lan")
	cur.GetMetadata().Finalizers = []string{"example.com/hold"}
	if _, err := c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "Network", "lab", "lan"); err != nil {
		t.Fatal(err)
	}
	if v, _ := anchor(); !strings.Contains(v, `"deleting":true`) {
		t.Fatalf("anchor %q of a network being deleted, want deleting", v)
	}
	_, err = c.Create(ctx, nicVM("lab", "late", api.VMNIC{Network: "lan"}))
	wantFieldError(t, err, "spec.nics[0].network", `network "lan" is being deleted`)

	// Deleted (its VMs first, then the finalizer), and made again.
	for _, name := range []string{"one", "two"} {
		if _, err := c.Delete(ctx, "VirtualMachine", "lab", name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, "Subnet", "lab", "lan-a"); err != nil {
		t.Fatal(err)
	}
	cur, _ = c.Get(ctx, "Network", "lab", "lan")
	cur.GetMetadata().Finalizers = nil
	if _, err := c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "Network", "lab", "lan"); !api.IsNotFound(err) {
		t.Fatalf("network after its finalizer went: %v, want not found", err)
	}
	if v, _ := anchor(); v != "" {
		t.Fatalf("anchor %q left after the network was deleted", v)
	}
	_, err = c.Create(ctx, nicVM("lab", "gone", api.VMNIC{Network: "lan"}))
	wantFieldError(t, err, "spec.nics[0].network", `network "lan" does not exist`)
	again := mustCreate(t, c, network("lab", "lan", ""))
	mustCreate(t, c, subnet("lab", "lan-a", "lan", "10.8.0.0/24"))
	vm3 := mustCreate(t, c, nicVM("lab", "three", api.VMNIC{Network: "lan"}))
	if got := macUID(vm3); got != again.Metadata.UID || got == n.Metadata.UID {
		t.Errorf("MAC on the network made again held under %s, want its new uid %s", got, again.Metadata.UID)
	}
}
