package cli

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// joinHost registers a Host named name, as an agent's join would.
func joinHost(t *testing.T, name string) {
	t.Helper()
	secret := strings.TrimSpace(hearth(t, "", "token", "create", "--join"))
	ca, err := os.ReadFile(filepath.Join(serverDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(&client.Context{Server: theServer.URL(), CertificateAuthority: string(ca), Token: secret})
	if err != nil {
		t.Fatal(err)
	}
	var jr api.JoinResponse
	if err := c.Do(t.Context(), http.MethodPost, api.PathPrefix+"/join", api.JoinRequest{Host: name, Address: "127.0.0.1"}, &jr); err != nil {
		t.Fatalf("joining %s: %v", name, err)
	}
}

// TestE2EHostDrain: draining a host cordons it and moves its VMs whose
// disks are in a shared pool to the target host; a VM on the host's own
// storage stays, with the server's reason, and the command fails saying
// how many stayed; uncordon makes the host schedulable again.
func TestE2EHostDrain(t *testing.T) {
	b := make([]byte, 3)
	rand.Read(b)
	p := "drain-" + hex.EncodeToString(b)
	from, to := p+"-a", p+"-b"
	joinHost(t, from)
	joinHost(t, to)
	manifest := `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: ` + p + `}
---
apiVersion: hearth.dev/v1alpha1
kind: StoragePool
metadata: {name: ` + p + `}
spec: {driver: rbd, rbd: {monitors: [192.0.2.1], pool: vms}}
---
apiVersion: hearth.dev/v1alpha1
kind: Volume
metadata: {name: shared, tenant: ` + p + `}
spec: {size: 1Gi, pool: ` + p + `}
---
apiVersion: hearth.dev/v1alpha1
kind: Volume
metadata: {name: local, tenant: ` + p + `}
spec: {size: 1Gi}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: mobile, tenant: ` + p + `}
spec: {host: ` + from + `, cpus: 1, memory: 256Mi, powerState: Stopped, disks: [{volume: shared}]}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: rooted, tenant: ` + p + `}
spec: {host: ` + from + `, cpus: 1, memory: 256Mi, powerState: Stopped, disks: [{volume: local}]}
`
	hearth(t, manifest, "apply", "-f", "-")
	t.Cleanup(func() { hearthErr(t, manifest, "delete", "-f", "-") })

	out, errOut, err := hearthErr(t, "", "host", "drain", from, "--to", to)
	if err == nil || !strings.Contains(err.Error(), "1 of its 2 VMs cannot move") {
		t.Errorf("drain = %v, want it to fail naming the VM that stays", err)
	}
	wantContains(t, "drain stdout", out, "host/"+from+" cordoned", "virtualmachine/mobile (tenant "+p+") moving to "+to)
	wantContains(t, "drain stderr", errOut, "virtualmachine/rooted (tenant "+p+") stays on "+from, "lives on "+from+"'s disk")
	c := adminClient(t)
	for vm, host := range map[string]string{"mobile": to, "rooted": from} {
		o, err := c.Get(t.Context(), "VirtualMachine", p, vm)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.(*api.VirtualMachine).Spec.Host; got != host {
			t.Errorf("VM %s is on %q after the drain, want %q", vm, got, host)
		}
	}
	h, err := c.Get(t.Context(), "Host", "", from)
	if err != nil {
		t.Fatal(err)
	}
	if !h.(*api.Host).Spec.Unschedulable {
		t.Errorf("host %s is not cordoned after the drain", from)
	}
	hearth(t, "", "host", "uncordon", from)
	if h, _ = c.Get(t.Context(), "Host", "", from); h.(*api.Host).Spec.Unschedulable {
		t.Errorf("host %s is still cordoned after uncordon", from)
	}
}
