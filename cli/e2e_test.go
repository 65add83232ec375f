package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/etcd"
)

// One real server (API over embedded etcd) serves every end-to-end test
// of this package; each test works in its own tenant.
var (
	serverOnce sync.Once
	theServer  *server.Server
	serverDir  string
	serverErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if theServer != nil {
		theServer.Close()
	}
	if serverDir != "" {
		os.RemoveAll(serverDir)
	}
	os.Exit(code)
}

// testServer starts the shared server on first use and returns the path
// of its admin config.
func testServer(t *testing.T) (adminConf string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a server")
	}
	serverOnce.Do(func() {
		serverDir, serverErr = os.MkdirTemp("", "hearth-cli-test-")
		if serverErr != nil {
			return
		}
		ports := make([]string, 1)
		for i := range ports {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				serverErr = err
				return
			}
			ports[i] = fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
			ln.Close()
		}
		// The server runs until the context given to Start ends, so it
		// gets one that lasts the whole run; Close stops it.
		theServer, serverErr = server.Start(context.Background(), server.Config{
			DataDir: serverDir,
			Listen:  "127.0.0.1:0",
			Etcd:    etcd.Config{PeerURL: "https://127.0.0.1:" + ports[0]},
		})
	})
	if serverErr != nil {
		t.Fatalf("starting the server: %v", serverErr)
	}
	return filepath.Join(serverDir, "admin.conf")
}

// hearth runs a command as the admin and fails the test if it fails.
func hearth(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := hearthErr(t, stdin, args...)
	if err != nil {
		t.Fatalf("hearth %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// hearthErr runs a command as the admin.
func hearthErr(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	conf := testServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runCLI(ctx, t, stdin, append([]string{"--config", conf}, args...)...)
}

func adminClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.FromConfig(testServer(t), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

// labYAML is a whole small lab in one file, listed out of order.
func labYAML(tenant string, mtu int, extra string) string {
	return fmt.Sprintf(`apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: a, tenant: %[1]s, labels: {lab: e2e, tier: web}}
spec: {network: net1, cidr: 10.0.0.0/24}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: b, tenant: %[1]s, labels: {lab: e2e}}
spec: {network: net1, cidr: 10.0.1.0/24}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: net1, tenant: %[1]s, labels: {lab: e2e}}
spec: {mtu: %[2]d}
---
apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: %[1]s, labels: {lab: e2e}}
spec: {displayName: CLI test lab}
%[3]s`, tenant, mtu, extra)
}

func TestE2EApplyGetDescribeDelete(t *testing.T) {
	dir := t.TempDir()
	const tenant = "e2e-apply"
	lab := writeFile(t, dir, "lab.yaml", labYAML(tenant, 1450, ""))

	// Create: dependencies first, whatever the file's order.
	out := hearth(t, "", "apply", "-f", lab)
	wantContains(t, "first apply", out, "tenant/"+tenant+" created", "network/net1 created", "subnet/a created", "subnet/b created")
	if strings.Index(out, "tenant/") > strings.Index(out, "network/") || strings.Index(out, "network/") > strings.Index(out, "subnet/") {
		t.Errorf("apply order: tenant, then network, then subnets:\n%s", out)
	}

	// Again: nothing to do.
	out = hearth(t, "", "apply", "-f", lab)
	if strings.Count(out, " unchanged\n") != 4 {
		t.Errorf("second apply, want 4 unchanged:\n%s", out)
	}

	// An edit, through stdin.
	out = hearth(t, labYAML(tenant, 1400, ""), "apply", "-f", "-")
	wantContains(t, "apply of an edit", out, "network/net1 configured", "subnet/a unchanged")
	out = hearth(t, labYAML(tenant, 1300, ""), "apply", "-f", "-", "--dry-run")
	wantContains(t, "dry run", out, "network/net1 configured (dry run)", "subnet/a unchanged (dry run)")

	// get: table, yaml, json, -A, -l.
	out = hearth(t, "", "get", "networks", "-t", tenant)
	wantContains(t, "get table", out, "NAME", "MTU", "AGE", "net1", "1400")
	if strings.Contains(out, "TENANT") {
		t.Errorf("get without -A has a TENANT column:\n%s", out)
	}
	out = hearth(t, "", "get", "net", "net1", "-t", tenant, "-o", "yaml")
	wantContains(t, "get -o yaml", out, "kind: Network", "name: net1", "mtu: 1400")
	if strings.Contains(out, "kind: List") {
		t.Errorf("get of one name prints a List:\n%s", out)
	}
	out = hearth(t, "", "get", "subnets", "-t", tenant, "-o", "json")
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 {
		t.Errorf("get -o json: %v kind %q, %d items:\n%s", err, list.Kind, len(list.Items), out)
	}
	for _, it := range list.Items {
		if _, err := api.Decode(it); err != nil {
			t.Errorf("get -o json item does not decode: %v", err)
		}
	}
	out = hearth(t, "", "get", "subnets", "-A")
	wantContains(t, "get -A", out, "TENANT", tenant)
	if !strings.HasPrefix(out, "TENANT") {
		t.Errorf("get -A: TENANT is not the first column:\n%s", out)
	}
	out = hearth(t, "", "get", "subnets", "-t", tenant, "-l", "tier=web", "-o", "name")
	if out != "subnet/a\n" {
		t.Errorf("get -l tier=web -o name = %q, want subnet/a", out)
	}
	out = hearth(t, "", "get", "network/net1", "subnet/b", "-t", tenant)
	wantContains(t, "get KIND/NAME", out, "network/net1", "subnet/b")
	_, errOut := hearthOK(t, "get", "volumes", "-t", tenant)
	wantContains(t, "empty get", errOut, "No resources found in tenant "+tenant+".")
	_, errOut, err := hearthErr(t, "", "get", "network", "nope", "-t", tenant)
	if err == nil || !api.IsNotFound(err) {
		t.Errorf("get of a missing object: %v", err)
	}
	wantContains(t, "get of a missing object", errOut, `"nope" not found`)

	// describe shows the object and the events about it.
	c := adminClient(t)
	ctx := context.Background()
	net1, err := c.Get(ctx, "Network", tenant, "net1")
	if err != nil {
		t.Fatal(err)
	}
	rec := client.NewRecorder(c, "test/e2e")
	rec.Eventf(ctx, net1, api.EventWarning, "VNIExhausted", "no VNI left for %s", "net1")
	out = hearth(t, "", "describe", "network", "net1", "-t", tenant)
	wantContains(t, "describe", out, "Name:", "net1", "Tenant:", tenant, "Labels:", "lab=e2e", "Spec:\n  mtu: 1400",
		"Events:", "TYPE", "REASON", "Warning", "VNIExhausted", "test/e2e", "no VNI left for net1")
	out = hearth(t, "", "events", "--for", "network/net1", "-t", tenant)
	wantContains(t, "events --for", out, "LAST SEEN", "VNIExhausted", "network/net1")

	// --prune deletes what carries the label but left the files.
	withOld := writeFile(t, dir, "with-old.yaml", labYAML(tenant, 1400, `---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: old, tenant: `+tenant+`, labels: {lab: e2e}}
spec: {}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: unlabelled, tenant: `+tenant+`}
spec: {}
`))
	out = hearth(t, "", "apply", "-f", withOld)
	wantContains(t, "apply with old", out, "network/old created", "network/unlabelled created")
	current := writeFile(t, dir, "current.yaml", labYAML(tenant, 1400, ""))
	out = hearth(t, "", "apply", "-f", current, "--prune", "-l", "lab=e2e")
	wantContains(t, "apply --prune", out, "network/old pruned", "network/net1 unchanged")
	if strings.Contains(out, "unlabelled") || strings.Contains(out, "net1 pruned") || strings.Contains(out, "tenant/"+tenant+" pruned") {
		t.Errorf("prune deleted too much:\n%s", out)
	}
	if _, err := c.Get(ctx, "Network", tenant, "old"); !api.IsNotFound(err) {
		t.Errorf("pruned network still there: %v", err)
	}
	if _, err := c.Get(ctx, "Network", tenant, "unlabelled"); err != nil {
		t.Errorf("unlabelled network was pruned: %v", err)
	}

	// delete by name, and from a file.
	out = hearth(t, "", "delete", "subnet", "b", "-t", tenant, "--wait")
	wantContains(t, "delete", out, "subnet/b deleted")
	if _, err := c.Get(ctx, "Subnet", tenant, "b"); !api.IsNotFound(err) {
		t.Errorf("deleted subnet still there: %v", err)
	}
	only := writeFile(t, dir, "unlabelled.yaml", "apiVersion: hearth.dev/v1alpha1\nkind: Network\nmetadata: {name: unlabelled}\nspec: {}\n")
	out = hearth(t, "", "delete", "-f", only, "-t", tenant)
	wantContains(t, "delete -f", out, "network/unlabelled deleted")
}

// hearthOK runs a command that must succeed and returns stdout and stderr.
func hearthOK(t *testing.T, args ...string) (string, string) {
	t.Helper()
	out, errOut, err := hearthErr(t, "", args...)
	if err != nil {
		t.Fatalf("hearth %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out, errOut
}

func TestE2EInvalidFileChangesNothing(t *testing.T) {
	const tenant = "e2e-bad"
	bad := writeFile(t, t.TempDir(), "bad.yaml", fmt.Sprintf(`apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: %[1]s}
spec: {}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: net1, tenant: %[1]s}
spec: {mtu: 1400, colour: blue}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: a, tenant: %[1]s}
spec: {network: net1, cidr: 10.0.0.0/33}
`, tenant))
	out, errOut, err := hearthErr(t, "", "apply", "-f", bad)
	if err == nil {
		t.Fatalf("apply of a bad file succeeded:\n%s", out)
	}
	wantContains(t, "apply of a bad file", errOut, "bad.yaml (document 2)", "spec.colour: unknown field",
		"bad.yaml (document 3)", "spec.cidr:", "10.0.0.0/33", "nothing was changed")
	if out != "" {
		t.Errorf("apply of a bad file printed results:\n%s", out)
	}
	if _, err := adminClient(t).Get(context.Background(), "Tenant", "", tenant); !api.IsNotFound(err) {
		t.Errorf("the tenant of a bad file was created: %v", err)
	}
}

func TestE2ETokenLoginWhoAmI(t *testing.T) {
	const tenant = "e2e-login"
	dir := t.TempDir()
	hearth(t, fmt.Sprintf(`apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: %[1]s}
spec: {}
---
apiVersion: hearth.dev/v1alpha1
kind: User
metadata: {name: alice}
spec: {tenant: %[1]s, role: tenant-admin}
`, tenant), "apply", "-f", "-")

	out, errOut := hearthOK(t, "token", "create", "--user", "alice", "--ttl", "1h", "--description", "e2e")
	secret := strings.TrimSpace(out)
	if secret == "" || strings.Contains(secret, "\n") || strings.Contains(secret, " ") {
		t.Fatalf("token create printed more than the secret: %q", out)
	}
	wantContains(t, "token create stderr", errOut, "for user alice", "expires")

	// The server lists tokens from its mirror of etcd: allow it a moment.
	waitFor(t, "the token in the list", func() bool {
		out = hearth(t, "", "token", "list", "--user", "alice")
		return strings.Contains(out, "e2e")
	})
	wantContains(t, "token list", out, "ID", "DESCRIPTION", "in 59m")

	// Log in with the new token into a config of its own. The server
	// learns of new tokens and users through a watch: allow it a moment.
	conf := filepath.Join(dir, "alice.conf")
	server := theServer.URL()
	ca := filepath.Join(serverDir, "ca.crt")
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, errOut, err = runCLI(context.Background(), t, "", "--config", conf, "--context", "alice", "login", server, "--token", secret, "--ca-file", ca)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("login: %v\n%s", err, errOut)
	}
	wantContains(t, "login", out, "Logged in to "+server+" as alice (tenant-admin, tenant "+tenant+")")

	out, _, err = runCLI(context.Background(), t, "", "--config", conf, "whoami")
	if err != nil {
		t.Fatal(err)
	}
	wantContains(t, "whoami", out, "alice", "tenant-admin", tenant)
	out, _, _ = runCLI(context.Background(), t, "", "--config", conf, "config", "get-contexts")
	wantContains(t, "get-contexts after login", out, "*         alice")

	// Alice works in her tenant by default.
	out, _, err = runCLI(context.Background(), t, "apiVersion: hearth.dev/v1alpha1\nkind: Network\nmetadata: {name: mine}\nspec: {}\n",
		"--config", conf, "apply", "-f", "-")
	if err != nil || !strings.Contains(out, "network/mine created") {
		t.Errorf("apply as alice: %v\n%s", err, out)
	}

	// Revoke it; the login no longer works.
	var list struct {
		Items []struct{ ID string } `json:"items"`
	}
	out = hearth(t, "", "token", "list", "--user", "alice", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("token list -o json: %v\n%s", err, out)
	}
	out = hearth(t, "", "token", "delete", "--user", "alice", list.Items[0].ID)
	wantContains(t, "token delete", out, "token "+list.Items[0].ID+" deleted")
}

func TestE2EAPIResourcesAndVersion(t *testing.T) {
	out := hearth(t, "", "api-resources")
	wantContains(t, "api-resources", out, "NAME", "SHORTNAMES", "KIND", "SCOPE", "networks", "net", "Network", "Tenant")
	out = hearth(t, "", "version")
	wantContains(t, "version", out, "Client Version:", "Server Version:")
}

func TestE2EGetWatch(t *testing.T) {
	const tenant = "e2e-watch"
	hearth(t, fmt.Sprintf("apiVersion: hearth.dev/v1alpha1\nkind: Tenant\nmetadata: {name: %s}\nspec: {}\n", tenant), "apply", "-f", "-")
	conf := testServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLIWith(ctx, &out, &errOut, "", "--config", conf, "get", "networks", "-w", "-t", tenant)
		done <- err
	}()
	waitFor(t, "the empty list", func() bool { return strings.Contains(errOut.String(), "No resources found") })
	hearth(t, "apiVersion: hearth.dev/v1alpha1\nkind: Network\nmetadata: {name: watched}\nspec: {}\n", "apply", "-f", "-", "-t", tenant)
	waitFor(t, "the new network", func() bool { return strings.Contains(out.String(), "watched") })
	if !strings.HasPrefix(out.String(), "NAME") {
		t.Errorf("watch output has no header:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("get -w ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("get -w did not stop when its context ended")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestE2EVMPowerVerbs: `hearth vm start|stop|restart|pause|resume` set the
// VM's spec, name each VM they touched, and a missing VM is named with
// its tenant while the others still change.
func TestE2EVMPowerVerbs(t *testing.T) {
	hearth(t, `apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: power}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: a, tenant: power}
spec: {boot: {from: kernel, kernel: {image: vmlinuz}}}
---
apiVersion: hearth.dev/v1alpha1
kind: VirtualMachine
metadata: {name: b, tenant: power}
spec: {boot: {from: kernel, kernel: {image: vmlinuz}}}
`, "apply", "-f", "-")
	c := adminClient(t)
	ctx := context.Background()
	spec := func(name string) api.VirtualMachineSpec {
		t.Helper()
		o, err := c.Get(ctx, "VirtualMachine", "power", name)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*api.VirtualMachine).Spec
	}
	for _, step := range []struct{ verb, done, state string }{
		{"stop", "stopped", api.PowerStopped},
		{"start", "started", api.PowerRunning},
		{"pause", "paused", api.PowerPaused},
		{"resume", "resumed", api.PowerRunning},
	} {
		out := hearth(t, "", "vm", step.verb, "a", "b", "-t", "power")
		wantContains(t, "vm "+step.verb, out, "virtualmachine/a "+step.done, "virtualmachine/b "+step.done)
		for _, n := range []string{"a", "b"} {
			if got := spec(n).PowerState; got != step.state {
				t.Fatalf("after vm %s: %s has powerState %q, want %q", step.verb, n, got, step.state)
			}
		}
	}
	before := time.Now().Add(-time.Second)
	out, errOut, err := hearthErr(t, "", "vm", "restart", "a", "nosuch", "-t", "power")
	if err == nil {
		t.Fatalf("vm restart of a missing VM succeeded:\n%s", out)
	}
	wantContains(t, "vm restart", out, "virtualmachine/a restart requested")
	wantContains(t, "vm restart errors", errOut, `virtualmachine "nosuch" not found in tenant power`)
	if r := spec("a").RestartRequested; r == nil || r.Before(before) {
		t.Fatalf("after vm restart: restartRequested %v, want about now", r)
	}
}
