package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// declarativeLab is a tenant with a quota and a VM, as a person writes it:
// no host, no power state.
func declarativeLab(tenant, vmExtra string) string {
	return fmt.Sprintf(`apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: %[1]s}
spec:
  quota: {vcpus: 4, vms: 4}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: web-1
  tenant: %[1]s
  labels: {app: web, tier: front}
spec:
  memory: 256Mi
  boot:
    from: kernel
    kernel: {image: vmlinuz}
    cmdline: console=ttyS0
%[2]s`, tenant, vmExtra)
}

func getVM(t *testing.T, tenant, name string) *api.VirtualMachine {
	t.Helper()
	o, err := adminClient(t).Get(context.Background(), "VirtualMachine", tenant, name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*api.VirtualMachine)
}

// TestE2EApplyIsDeclarative: re-applying a file changes nothing and says
// so; what the scheduler and the VM verbs set (spec.host, powerState,
// restartRequested) is left alone by later applies; a field the file
// drops is removed; and --dry-run fails exactly where the real apply does
// (a field the server refuses to change, a quota) and writes nothing.
func TestE2EApplyIsDeclarative(t *testing.T) {
	const tenant = "e2e-declare"
	dir := t.TempDir()
	lab := writeFile(t, dir, "lab.yaml", declarativeLab(tenant, "  cpus: 2\n"))
	out := hearth(t, "", "apply", "-f", lab)
	wantContains(t, "first apply", out, "tenant/"+tenant+" created", "virtualmachine/web-1 created")
	out = hearth(t, "", "apply", "-f", lab)
	if out != "tenant/"+tenant+" unchanged\nvirtualmachine/web-1 unchanged\n" {
		t.Fatalf("second apply:\n%s", out)
	}

	// The scheduler binds the VM; a person stops and restarts it.
	c := adminClient(t)
	ctx := context.Background()
	if _, err := c.Patch(ctx, "VirtualMachine", tenant, "web-1", map[string]any{"spec": map[string]any{"host": "h1"}}, false); err != nil {
		t.Fatal(err)
	}
	hearth(t, "", "vm", "stop", "web-1", "-t", tenant)
	hearth(t, "", "vm", "restart", "web-1", "-t", tenant)
	before := getVM(t, tenant, "web-1")
	if before.Spec.Host != "h1" || before.Spec.PowerState != api.PowerStopped || before.Spec.RestartRequested == nil {
		t.Fatalf("the verbs did not take: %+v", before.Spec)
	}
	for _, dry := range []bool{true, false} {
		args := []string{"apply", "-f", lab}
		if dry {
			args = append(args, "--dry-run")
		}
		out, errOut := hearthOK(t, args...)
		if want := "virtualmachine/web-1 unchanged"; !strings.Contains(out, want) {
			t.Errorf("apply (dry run %v) after the scheduler and the verbs:\n%s%s", dry, out, errOut)
		}
	}
	after := getVM(t, tenant, "web-1")
	// (Controllers write status meanwhile, so the resourceVersion may
	// move; generation counts spec changes.)
	if after.Metadata.Generation != before.Metadata.Generation || !maps.Equal(after.Metadata.Annotations, before.Metadata.Annotations) || after.Spec.Host != "h1" ||
		after.Spec.PowerState != api.PowerStopped || !after.Spec.RestartRequested.Equal(*before.Spec.RestartRequested) {
		t.Fatalf("re-applying fought the scheduler or the verbs:\nbefore %+v\nafter  %+v", before.Spec, after.Spec)
	}

	// Drop cpus and a label from the file, change the memory: those go
	// (cpus back to its default), the rest stays.
	edited := strings.Replace(declarativeLab(tenant, ""), "tier: front", "", 1)
	edited = strings.Replace(edited, "memory: 256Mi", "memory: 384Mi", 1)
	lab = writeFile(t, dir, "lab.yaml", edited)
	out = hearth(t, "", "apply", "-f", lab, "--dry-run")
	wantContains(t, "dry run of an edit", out, "virtualmachine/web-1 configured (dry run)", "tenant/"+tenant+" unchanged (dry run)")
	if got := getVM(t, tenant, "web-1"); got.Metadata.Generation != after.Metadata.Generation || !maps.Equal(got.Metadata.Labels, after.Metadata.Labels) {
		t.Fatalf("a dry run changed the VM: %v %+v", got.Metadata.Labels, got.Spec)
	}
	out = hearth(t, "", "apply", "-f", lab)
	wantContains(t, "apply of an edit", out, "virtualmachine/web-1 configured")
	got := getVM(t, tenant, "web-1")
	if got.Spec.CPUs != 1 || got.Spec.Memory != 384<<20 || got.Metadata.Labels["tier"] != "" || got.Metadata.Labels["app"] != "web" ||
		got.Spec.Host != "h1" || got.Spec.PowerState != api.PowerStopped {
		t.Errorf("after dropping cpus and a label: labels %v spec %+v", got.Metadata.Labels, got.Spec)
	}
	out = hearth(t, "", "apply", "-f", lab)
	wantContains(t, "apply of the edit again", out, "virtualmachine/web-1 unchanged")

	// Changes the server refuses fail in the dry run as in the real one,
	// with the same message, and nothing is written.
	gen := getVM(t, tenant, "web-1").Metadata.Generation
	for _, c := range []struct{ extra, want string }{
		{"  host: h2\n  firmware: uefi\n", `spec.host: cannot change from "h1" to "h2": a UEFI VM's variable store is a file on its host`},
		{"  cpus: 8\n", "quota exceeded for vcpus: requested 8, used 0 of 4"},
	} {
		bad := writeFile(t, dir, "bad.yaml", edited+c.extra)
		var msgs [2]string
		for i, dry := range []bool{true, false} {
			args := []string{"apply", "-f", bad}
			if dry {
				args = append(args, "--dry-run")
			}
			out, errOut, err := hearthErr(t, "", args...)
			if err == nil {
				t.Fatalf("apply (dry run %v) of %q succeeded:\n%s", dry, c.extra, out)
			}
			wantContains(t, fmt.Sprintf("apply (dry run %v) of %q", dry, c.extra), errOut, c.want)
			msgs[i] = strings.ReplaceAll(errOut, " (dry run)", "")
		}
		if msgs[0] != msgs[1] {
			t.Errorf("the dry run and the real apply of %q fail differently:\n%s\n%s", c.extra, msgs[0], msgs[1])
		}
		if got := getVM(t, tenant, "web-1"); got.Metadata.Generation != gen {
			t.Errorf("a refused apply of %q changed the VM: %+v", c.extra, got.Spec)
		}
	}
}

// TestE2EApplyWarnsAndSubnetsDoNotOverlap: a VM naming a network that does
// not exist is refused, naming the field and what to do (its NIC takes an
// address there); a dry run of files that create the network says the VM
// could not be checked fully; a VM naming a missing security group is
// created with a warning that names the field, and gets the ResolvedRefs
// condition; a subnet overlapping another of its network is refused,
// also when two applies race; --tenant of a tenant that does not exist
// says so.
func TestE2EApplyWarnsAndSubnetsDoNotOverlap(t *testing.T) {
	const tenant = "e2e-refs"
	dir := t.TempDir()
	hearth(t, fmt.Sprintf("apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: %s}\n", tenant), "apply", "-f", "-")
	vm := writeFile(t, dir, "vm.yaml", `apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: web-1}
spec:
  boot: {from: network}
  nics: [{network: lan, securityGroups: [web]}]
`)
	_, errOut, err := hearthErr(t, "", "apply", "-f", vm, "-t", tenant)
	if err == nil {
		t.Fatalf("apply of a VM on a missing network succeeded")
	}
	wantContains(t, "apply of a VM on a missing network", errOut,
		`spec.nics[0].network: network "lan" does not exist in tenant `+tenant+`; create it (and a subnet on it) first`)

	// A dry run of the network with its VM refuses nothing and warns
	// about nothing: the network is in the files.
	netFile := writeFile(t, dir, "net.yaml", `apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: lan}
spec: {}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: a}
spec: {network: lan, cidr: 10.0.0.0/16}
`)
	out, errOut := hearthOK(t, "apply", "-f", netFile, "-f", vm, "-t", tenant, "--dry-run")
	wantContains(t, "dry run of the network", out, "network/lan created (dry run)", "subnet/a created (dry run)",
		"virtualmachine/web-1 created (dry run); not fully checked by the server, since it needs network/lan, which the files create")
	if strings.Contains(errOut, "Warning") {
		t.Errorf("a dry run warned about an object in its own files:\n%s", errOut)
	}
	out, errOut = hearthOK(t, "apply", "-f", netFile, "-f", vm, "-t", tenant)
	wantContains(t, "apply of the network and the VM", out, "virtualmachine/web-1 created")
	warning := `Warning: VirtualMachine ` + tenant + `/web-1: spec.nics[0].securityGroups[0]: security group "web" does not exist in tenant ` + tenant
	wantContains(t, "apply's warnings", errOut, warning)
	waitFor(t, "the ResolvedRefs condition", func() bool {
		c := getVM(t, tenant, "web-1").Status.Condition(api.ConditionResolvedRefs)
		return c != nil && c.Status == api.ConditionFalse && c.Reason == api.ReasonMissingObject &&
			c.Message == `spec.nics[0].securityGroups[0]: security group "web" does not exist in tenant `+tenant
	})
	out = hearth(t, "", "describe", "vm", "web-1", "-t", tenant)
	wantContains(t, "describe", out, "ResolvedRefs", "MissingReferences", "hearth.dev/last-applied-configuration=(what apply last wrote")
	sg := writeFile(t, dir, "sg.yaml", "apiVersion: hearth.dev/v1alpha1\nkind: SecurityGroup\nmetadata: {name: web}\nspec: {rules: [{ports: \"22\"}]}\n")
	_, errOut = hearthOK(t, "apply", "-f", sg, "-f", netFile, "-f", vm, "-t", tenant)
	if strings.Contains(errOut, "Warning") {
		t.Errorf("apply warned once the security group exists:\n%s", errOut)
	}
	waitFor(t, "ResolvedRefs=True", func() bool {
		c := getVM(t, tenant, "web-1").Status.Condition(api.ConditionResolvedRefs)
		return c != nil && c.Status == api.ConditionTrue
	})

	// Overlap: refused in a dry run and for real, naming the field.
	overlap := writeFile(t, dir, "b.yaml", "apiVersion: hearth.dev/v1alpha1\nkind: Subnet\nmetadata: {name: b}\nspec: {network: lan, cidr: 10.0.3.0/24}\n")
	for _, dry := range []string{"--dry-run", "--dry-run=false"} {
		_, errOut, err := hearthErr(t, "", "apply", "-f", overlap, "-t", tenant, dry)
		if err == nil {
			t.Fatalf("apply %s of an overlapping subnet succeeded", dry)
		}
		wantContains(t, "overlapping subnet "+dry, errOut, `spec.cidr: 10.0.3.0/24 overlaps subnet "a" (10.0.0.0/16) on network "lan"`)
	}
	// Two applies at once of subnets that overlap: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, cidr := range []string{"10.1.0.0/16", "10.1.2.0/24"} {
		f := writeFile(t, dir, fmt.Sprintf("race%d.yaml", i), fmt.Sprintf("apiVersion: hearth.dev/v1alpha1\nkind: Subnet\nmetadata: {name: race%d}\nspec: {network: lan, cidr: %s}\n", i, cidr))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = hearthErr(t, "", "apply", "-f", f, "-t", tenant)
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Errorf("two racing applies of overlapping subnets: errors %v and %v, want exactly one to fail", errs[0], errs[1])
	}

	// A subnet has a status.
	waitFor(t, "subnet a Ready", func() bool {
		o, err := adminClient(t).Get(context.Background(), "Subnet", tenant, "a")
		return err == nil && o.CommonStatus().Phase == api.SubnetReady
	})
	// It counts what is used and free: web-1's NIC holds 10.0.0.2 of
	// 10.0.0.1 to 10.0.255.254, less the gateway.
	waitFor(t, "subnet a's counts", func() bool {
		o, err := adminClient(t).Get(context.Background(), "Subnet", tenant, "a")
		return err == nil && o.(*api.Subnet).Status.Allocated == 1
	})
	out = hearth(t, "", "get", "subnets", "-t", tenant)
	wantContains(t, "get subnets", out, "STATUS", "Ready", "USED", "FREE", " 1 ", "65532")

	// A tenant that does not exist is named as such.
	_, errOut, err = hearthErr(t, "", "get", "vms", "-t", "nosuch")
	if err == nil || !strings.Contains(errOut, `tenant "nosuch" does not exist`) || strings.Contains(errOut, "No resources found") {
		t.Errorf("get -t nosuch: %v\n%s", err, errOut)
	}
	out, errOut, err = hearthErr(t, "", "apply", "-f", vm, "-t", "nosuch")
	if err == nil || !strings.Contains(errOut, `tenant "nosuch" does not exist`) || out != "" {
		t.Errorf("apply -t nosuch: %v\n%s%s", err, out, errOut)
	}
	_, errOut, err = hearthErr(t, "", "get", "vm", "web-1", "-t", "nosuch")
	if err == nil || !strings.Contains(errOut, `tenant "nosuch" does not exist`) {
		t.Errorf("get vm web-1 -t nosuch: %v\n%s", err, errOut)
	}
}

// TestE2EApplyRecordsNoCredentials: what apply records on an object is
// read by everyone who may read the object, so it holds no credential:
// not a Secret's values (which viewers may not read at all), not a power
// webhook's header values (which the server blanks for a cluster viewer).
// A security regression test: recording the file as it is would hand both
// out.
func TestE2EApplyRecordsNoCredentials(t *testing.T) {
	manifest := `apiVersion: hearth.dev/v1alpha1
kind: Secret
metadata: {name: e2e-rec}
spec:
  stringData: {token: "Bearer rec-s3cret"}
  data: {other: cmVjLXNlY3JldC10d28=}
---
apiVersion: hearth.dev/v1alpha1
kind: Machine
metadata: {name: e2e-rec-node}
spec:
  mac: "52:54:00:e2:e2:09"
  power:
    driver: webhook
    webhook:
      onURL: http://plug.invalid/on
      offURL: http://plug.invalid/off
      headers: {X-Plug-Room: rec-h3ader}
`
	hearth(t, manifest, "apply", "-f", "-")
	t.Cleanup(func() { hearthErr(t, manifest, "delete", "-f", "-") })
	out := hearth(t, manifest, "apply", "-f", "-")
	if out != "secret/e2e-rec unchanged\nmachine/e2e-rec-node unchanged\n" {
		t.Errorf("second apply:\n%s", out)
	}
	secrets := []string{"rec-s3cret", "cmVjLXNlY3JldC10d28", "rec-h3ader"}
	c := adminClient(t)
	ctx := context.Background()
	for _, kn := range [][2]string{{"Secret", "e2e-rec"}, {"Machine", "e2e-rec-node"}} {
		o, err := c.Get(ctx, kn[0], "", kn[1])
		if err != nil {
			t.Fatal(err)
		}
		rec := o.GetMetadata().Annotations[api.LastAppliedAnnotation]
		if rec == "" {
			t.Fatalf("%s %s has no last-applied configuration", kn[0], kn[1])
		}
		for _, s := range secrets {
			if strings.Contains(rec, s) {
				t.Errorf("%s %s records %q for everyone who reads it: %s", kn[0], kn[1], s, rec)
			}
		}
	}

	// A cluster viewer reads the machine with its header blanked, and
	// its annotations tell no more.
	hearth(t, "apiVersion: hearth.dev/v1alpha1\nkind: User\nmetadata: {name: e2e-rec-viewer}\nspec: {role: viewer}\n", "apply", "-f", "-")
	var tok struct {
		Token string `json:"token"`
	}
	if err := c.Do(ctx, http.MethodPost, api.PathPrefix+"/users/e2e-rec-viewer/tokens", map[string]string{"description": "e2e"}, &tok); err != nil {
		t.Fatal(err)
	}
	viewer, err := client.New(&client.Context{Name: "viewer", Server: theServer.URL(), CertificateAuthority: string(theServer.CAPEM()), Token: tok.Token})
	if err != nil {
		t.Fatal(err)
	}
	var m api.Object
	waitFor(t, "the viewer's token", func() bool {
		m, err = viewer.Get(ctx, "Machine", "", "e2e-rec-node")
		return err == nil
	})
	data, _ := json.Marshal(m)
	for _, s := range secrets {
		if strings.Contains(string(data), s) {
			t.Errorf("a cluster viewer reads %q in the machine: %s", s, data)
		}
	}
}
