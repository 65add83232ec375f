package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/servertest"
)

// resolvedRefs waits until the object's ResolvedRefs condition has status
// want and message msg, and returns the object.
func resolvedRefs(t *testing.T, env *servertest.Env, kind, tenant, name string, want api.ConditionStatus, msg string) api.Object {
	t.Helper()
	var obj api.Object
	servertest.Eventually(t, 10*time.Second, func() error {
		var err error
		if obj, err = env.Admin.Get(servertest.Ctx(t), kind, tenant, name); err != nil {
			return err
		}
		c := obj.CommonStatus().Condition(api.ConditionResolvedRefs)
		if c == nil || c.Status != want || c.Message != msg {
			return fmt.Errorf("%s %s: ResolvedRefs %+v, want %s %q", kind, name, c, want, msg)
		}
		return nil
	})
	return obj
}

// events returns the events about one object with a reason, as (message,
// count) pairs.
func events(t *testing.T, env *servertest.Env, kind, tenant, name, reason string) map[string]int {
	t.Helper()
	evs, _, err := env.Admin.List(servertest.Ctx(t), "Event", tenant, client.ListOptions{FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range evs {
		if ev := e.(*api.Event); ev.Spec.Reason == reason {
			out[ev.Spec.Message] += ev.Spec.Count
		}
	}
	return out
}

// onceEach checks that every message was recorded once, and the wanted
// ones among them.
func onceEach(t *testing.T, got map[string]int, want ...string) {
	t.Helper()
	for msg, n := range got {
		if n != 1 {
			t.Errorf("event %q recorded %d times, want once", msg, n)
		}
	}
	for _, w := range want {
		if got[w] != 1 {
			t.Errorf("no event %q among %v", w, got)
		}
	}
}

// TestReferencesCondition: objects naming missing objects get
// ResolvedRefs=False naming each one (and a Subnet is Pending), an event
// once per distinct set of missing names however often it resyncs, and
// True (Ready) as the named objects appear. A floating IP is told nothing
// about external networks, which its tenant cannot read.
func TestReferencesCondition(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- (&controllers.References{Client: env.Admin, Recorder: client.NewRecorder(env.Admin, "test/references"),
			Resync: 100 * time.Millisecond}).Run(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	create := func(objs ...api.Object) {
		t.Helper()
		for _, o := range objs {
			if _, err := env.Admin.Create(servertest.Ctx(t), o); err != nil {
				t.Fatalf("create %s: %v", api.Ref(o), err)
			}
		}
	}
	tm := func(kind string) api.TypeMeta { return api.TypeMeta{APIVersion: api.APIVersion, Kind: kind} }
	meta := func(name string) api.ObjectMeta { return api.ObjectMeta{Name: name, Tenant: "lab"} }

	// The subnet first, so that the VM's first look already finds it.
	// A NIC's network and subnet must exist for the VM to be created at
	// all (its address comes from there): the VM's NIC is on mgmt, and
	// names a security group that does not exist yet.
	create(
		&api.Network{TypeMeta: tm("Network"), Metadata: meta("mgmt")},
		&api.Subnet{TypeMeta: tm("Subnet"), Metadata: meta("mgmt-a"), Spec: api.SubnetSpec{Network: "mgmt", CIDR: "10.9.0.0/24"}},
		&api.Subnet{TypeMeta: tm("Subnet"), Metadata: meta("lan-a"), Spec: api.SubnetSpec{Network: "lan", CIDR: "10.0.0.0/24"}},
		&api.ExternalNetwork{TypeMeta: tm("ExternalNetwork"), Metadata: api.ObjectMeta{Name: "uplink"}, Spec: api.ExternalNetworkSpec{CIDR: "192.0.2.0/24"}},
		&api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: meta("web-1"), Spec: api.VirtualMachineSpec{
			Disks:     []api.VMDisk{{Image: "debian-12"}},
			NICs:      []api.VMNIC{{Network: "mgmt", SecurityGroups: []string{"web"}}},
			CloudInit: api.CloudInit{SSHKeys: []string{"alice"}},
		}},
		&api.FloatingIP{TypeMeta: tm("FloatingIP"), Metadata: meta("web"),
			Spec: api.FloatingIPSpec{ExternalNetwork: "uplink", Target: &api.FloatingIPTarget{VM: "web-2"}}},
	)
	vmMissing := `spec.nics[0].securityGroups[0]: security group "web" does not exist in tenant lab; ` +
		`spec.disks[0].image: image "debian-12" does not exist in tenant lab or among the shared images; ` +
		`spec.cloudInit.sshKeys[0]: SSH key "alice" does not exist in tenant lab`
	vm := resolvedRefs(t, env, "VirtualMachine", "lab", "web-1", api.ConditionFalse, vmMissing)
	if c := vm.CommonStatus().Condition(api.ConditionResolvedRefs); c.Reason != api.ReasonMissingObject {
		t.Errorf("VM condition %+v, want reason MissingObject", c)
	}
	sn := resolvedRefs(t, env, "Subnet", "lab", "lan-a", api.ConditionFalse, `spec.network: network "lan" does not exist in tenant lab`)
	if sn.CommonStatus().Phase != api.SubnetPending {
		t.Errorf("a subnet without its network is %q, want Pending", sn.CommonStatus().Phase)
	}
	resolvedRefs(t, env, "FloatingIP", "lab", "web", api.ConditionFalse, `spec.target.vm: VM "web-2" does not exist in tenant lab`)

	// Many resyncs later, still one event per distinct message. (The
	// controller's caches of each kind fill independently, so a first
	// look may have missed the subnet too: that is another message.)
	time.Sleep(time.Second)
	onceEach(t, events(t, env, "VirtualMachine", "lab", "web-1", "MissingReferences"), vmMissing)

	// The network appears: the subnet is Ready. The security group
	// appears: the VM's message (and so its event) changes once.
	create(&api.Network{TypeMeta: tm("Network"), Metadata: meta("lan")})
	sn = resolvedRefs(t, env, "Subnet", "lab", "lan-a", api.ConditionTrue, "every object it names exists")
	if sn.CommonStatus().Phase != api.SubnetReady {
		t.Errorf("a subnet on an existing network is %q, want Ready", sn.CommonStatus().Phase)
	}
	create(servertest.Example("SecurityGroup", "lab"))
	vmMissing2 := `spec.disks[0].image: image "debian-12" does not exist in tenant lab or among the shared images; ` +
		`spec.cloudInit.sshKeys[0]: SSH key "alice" does not exist in tenant lab`
	resolvedRefs(t, env, "VirtualMachine", "lab", "web-1", api.ConditionFalse, vmMissing2)

	// A shared image and the key: all resolved.
	img := servertest.Example("Image", "")
	create(img, &api.SSHKey{TypeMeta: tm("SSHKey"), Metadata: meta("alice"),
		Spec: api.SSHKeySpec{PublicKey: servertest.Example("SSHKey", "lab").(*api.SSHKey).Spec.PublicKey}})
	resolvedRefs(t, env, "VirtualMachine", "lab", "web-1", api.ConditionTrue, "every object it names exists")
	time.Sleep(500 * time.Millisecond)
	// (The image and the key are created one after the other, so a
	// third message, naming the key alone, may come between.)
	onceEach(t, events(t, env, "VirtualMachine", "lab", "web-1", "MissingReferences"), vmMissing, vmMissing2)
	if got := events(t, env, "VirtualMachine", "lab", "web-1", "ReferencesResolved"); len(got) != 1 {
		t.Errorf("ReferencesResolved events of the VM: %v, want one", got)
	}
	for msg := range events(t, env, "FloatingIP", "lab", "web", "MissingReferences") {
		if strings.Contains(msg, "uplink") {
			t.Errorf("a floating IP's event names an external network: %q", msg)
		}
	}

	// A VM whose names resolve from the start is left alone: its status
	// is its agent's.
	fine, err := env.Admin.Create(servertest.Ctx(t), &api.VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: meta("web-3"),
		Spec: api.VirtualMachineSpec{Boot: api.VMBoot{From: api.BootFromNetwork}, NICs: []api.VMNIC{{Network: "lan", Subnet: "lan-a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := mustGetVM(t, env, "web-3"); got.Metadata.ResourceVersion != fine.GetMetadata().ResourceVersion || got.Status.Condition(api.ConditionResolvedRefs) != nil {
		t.Errorf("a VM whose names resolve was written: %+v", got.Status)
	}

	// A spec change that names nothing new costs no status write (the
	// agent's would race it).
	before := mustGetVM(t, env, "web-1").Metadata.ResourceVersion
	if _, err := env.Admin.Patch(servertest.Ctx(t), "VirtualMachine", "lab", "web-1", map[string]any{"spec": map[string]any{"powerState": api.PowerStopped}}, false); err != nil {
		t.Fatal(err)
	}
	after := mustGetVM(t, env, "web-1").Metadata.ResourceVersion
	time.Sleep(500 * time.Millisecond)
	if got := mustGetVM(t, env, "web-1").Metadata.ResourceVersion; got != after || got == before {
		t.Errorf("after a spec change the VM went from version %s to %s and then %s: the controller wrote it", before, after, got)
	}

	// A status written by someone else (the agent's phase) keeps the
	// condition, and the condition survives the agent's write.
	if _, err := env.Admin.Patch(servertest.Ctx(t), "VirtualMachine", "lab", "web-1", map[string]any{"status": map[string]any{"phase": api.VMRunning}}, true); err != nil {
		t.Fatal(err)
	}
	vm = resolvedRefs(t, env, "VirtualMachine", "lab", "web-1", api.ConditionTrue, "every object it names exists")
	if vm.CommonStatus().Phase != api.VMRunning {
		t.Errorf("the VM's phase became %q, want Running", vm.CommonStatus().Phase)
	}
}

func mustGetVM(t *testing.T, env *servertest.Env, name string) *api.VirtualMachine {
	t.Helper()
	o, err := env.Admin.Get(servertest.Ctx(t), "VirtualMachine", "lab", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*api.VirtualMachine)
}
