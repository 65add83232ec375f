package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// syncBuffer is a bytes.Buffer safe to write from one goroutine while
// another reads: the CLI's logger and watches write while tests look.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCLI runs one hearth command in-process, as Main would, and returns
// its stdout and stderr (with the error printed the way Main prints it).
func runCLI(ctx context.Context, t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut syncBuffer
	return runCLIWith(ctx, &out, &errOut, stdin, args...)
}

func runCLIWith(ctx context.Context, out, errOut *syncBuffer, stdin string, args ...string) (string, string, error) {
	g := &globals{out: out, errOut: errOut, in: strings.NewReader(stdin)}
	root := NewRoot(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		printError(errOut, err)
	}
	return out.String(), errOut.String(), err
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"one", "a: 1\n", 1},
		{"leading separator", "---\na: 1\n", 1},
		{"three", "a: 1\n---\nb: 2\n--- # comment\nc: 3\n", 3},
		{"empty and comment-only documents dropped", "---\n# only a comment\n---\n\n---\na: 1\n...\n", 1},
		{"separator needs its own line", "a: '---x'\nb: |\n  ---y\n", 1},
		{"nothing", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitDocuments([]byte(tt.in)); len(got) != tt.want {
				t.Errorf("got %d documents %q, want %d", len(got), got, tt.want)
			}
		})
	}
}

const labFile = `# A small lab, in the wrong order on purpose.
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: a, tenant: lab}
spec: {network: net1, cidr: 10.0.0.0/24}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: net1, tenant: lab}
spec: {}
---
apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: lab}
spec: {displayName: Lab}
---
apiVersion: hearth.dev/v1alpha1
kind: List
items:
- apiVersion: hearth.dev/v1alpha1
  kind: Network
  metadata: {name: net2}
  spec: {}
`

func TestManifestsParseAndOrder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "lab/lab.yaml", labFile)
	writeFile(t, dir, "lab/notes.txt", "not a manifest")
	writeFile(t, dir, "lab/more/site.json", `{"apiVersion":"hearth.dev/v1alpha1","kind":"Site","metadata":{"name":"home"},"spec":{}}`)
	ms, err := readManifests([]string{filepath.Join(dir, "lab")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad := validateManifests(ms, "default"); len(bad) > 0 {
		t.Fatalf("unexpected errors: %v", (&manifestErrors{bad: bad, total: len(ms)}).Error())
	}
	sortManifests(ms)
	var got []string
	for _, m := range ms {
		got = append(got, objectKey(m.Obj))
	}
	want := []string{"Tenant//lab", "Site//home", "Network/lab/net1", "Network/default/net2", "Subnet/lab/a"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("order:\n got %v\nwant %v", got, want)
	}
	if ms[3].Source != filepath.Join(dir, "lab/lab.yaml")+" (document 4) item 0" {
		t.Errorf("source of a List item: %q", ms[3].Source)
	}
}

func TestKindOrderCoversEveryKind(t *testing.T) {
	for _, k := range api.Kinds() {
		if kindRank(k.Kind) == len(kindOrder) {
			t.Errorf("kind %s has no place in kindOrder: say where apply creates it", k.Kind)
		}
	}
}

func TestManifestErrorsNameFileDocumentAndField(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "bad.yaml", `apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: ok, tenant: lab}
spec: {}
---
apiVersion: hearth.dev/v1alpha1
kind: Subnet
metadata: {name: wide, tenant: lab}
spec: {network: ok, cidr: 10.0.0.0/33}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: typo, tenant: lab}
spec: {mtux: 1400, mtu: 100}
---
apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: ok, tenant: lab}
spec: {}
---
kind: Nonsense
---
a: [unclosed
`)
	ms, err := readManifests([]string{p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := validateManifests(ms, "")
	msg := (&manifestErrors{bad: bad, total: len(ms)}).Error()
	for _, want := range []string{
		"5 of 6 documents are invalid; nothing was changed",
		"bad.yaml (document 2) Subnet \"wide\":\n    spec.cidr:",
		"bad.yaml (document 3) Network \"typo\":\n    spec.mtux: unknown field (did you mean \"mtu\"?)",
		// The rest of a document with an unknown field is still checked.
		"spec.mtu: 100 is out of range",
		"(document 4) Network \"ok\":\n    metadata.name: network/ok is also defined in " + p + " (document 1)",
		"(document 5):\n",
		"kind: \"Nonsense\" is not a Hearth kind",
		"(document 6):\n    not valid YAML",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "(document 1) Network") {
		t.Errorf("the valid document is reported:\n%s", msg)
	}
}

func TestTenantDefaulting(t *testing.T) {
	ms := parseManifests("x.yaml", []byte(`apiVersion: hearth.dev/v1alpha1
kind: Network
metadata: {name: net}
spec: {}
---
apiVersion: hearth.dev/v1alpha1
kind: Tenant
metadata: {name: t}
spec: {}
`))
	if bad := validateManifests(ms, "ctx-tenant"); len(bad) > 0 {
		t.Fatal((&manifestErrors{bad: bad, total: len(ms)}).Error())
	}
	if got := ms[0].Obj.GetMetadata().Tenant; got != "ctx-tenant" {
		t.Errorf("network tenant %q, want ctx-tenant", got)
	}
	if got := ms[1].Obj.GetMetadata().Tenant; got != "" {
		t.Errorf("tenant (cluster-scoped) got tenant %q", got)
	}

	ms = parseManifests("x.yaml", []byte("apiVersion: hearth.dev/v1alpha1\nkind: Network\nmetadata: {name: net}\nspec: {}\n"))
	bad := validateManifests(ms, "")
	if len(bad) != 1 || !strings.Contains(bad[0].Errs.Error(), "use --tenant") {
		t.Errorf("no tenant anywhere: got %v", bad)
	}
}

func TestTableRendering(t *testing.T) {
	k, _ := api.KindByName("Network")
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	created := now.Add(-3 * time.Hour)
	mk := func(tenant, name string, vni, mtu int) api.Object {
		n := k.New().(*api.Network)
		n.Metadata = api.ObjectMeta{Name: name, Tenant: tenant, CreationTimestamp: &created, Labels: map[string]string{"b": "2", "a": "1"}}
		n.Spec.MTU = mtu
		n.Status.VNI = vni
		return n
	}
	objs := []api.Object{mk("lab", "net1", 4097, 1450), mk("other-tenant", "a-much-longer-name", 0, 9000)}
	render := func(o tableOptions) string {
		o.now = now
		rows := [][]string{tableHeader(k, o)}
		for _, obj := range objs {
			rows = append(rows, tableRow(k, obj, o))
		}
		var b bytes.Buffer
		if err := writeTable(&b, rows); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}

	got := render(tableOptions{})
	want := "" +
		"NAME                 VNI    MTU    EXTERNAL   AGE\n" +
		"net1                 4097   1450              3h\n" +
		"a-much-longer-name          9000              3h\n"
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}

	got = render(tableOptions{showTenant: true, showLabels: true})
	if !strings.HasPrefix(got, "TENANT         NAME ") {
		t.Errorf("-A table does not start with TENANT:\n%s", got)
	}
	if !strings.Contains(got, "a=1,b=2") {
		t.Errorf("labels column missing:\n%s", got)
	}

	// Wide columns show only with -o wide.
	ek, _ := api.KindByName("Event")
	if h := strings.Join(tableHeader(ek, tableOptions{}), " "); strings.Contains(h, "COUNT") {
		t.Errorf("narrow event header has a wide column: %s", h)
	}
	if h := strings.Join(tableHeader(ek, tableOptions{wide: true}), " "); !strings.Contains(h, "COUNT") {
		t.Errorf("wide event header lacks COUNT: %s", h)
	}
}

func TestStreamTableKeepsColumnsAligned(t *testing.T) {
	var b bytes.Buffer
	st := &streamTable{w: &b}
	st.write([]string{"NAME", "AGE"}, []string{"a", "1s"})
	st.write([]string{"bb", "2s"})
	want := "NAME   AGE\na      1s\nbb     2s\n"
	if b.String() != want {
		t.Errorf("got:\n%q\nwant:\n%q", b.String(), want)
	}
}

func TestParseTargets(t *testing.T) {
	ts, err := parseTargets([]string{"net/a", "subnets/b", "network/c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].kind.Kind != "Network" || strings.Join(ts[0].names, ",") != "a,c" || ts[1].kind.Kind != "Subnet" {
		t.Errorf("got %+v", ts)
	}
	if _, err := parseTargets([]string{"net/a", "b"}); err == nil {
		t.Error("mixing KIND/NAME and NAME: no error")
	}
	if _, err := parseTargets([]string{"nets,subnets", "x"}); err == nil {
		t.Error("names with several kinds: no error")
	}
	if _, err := parseTargets([]string{"gadgets"}); err == nil || !strings.Contains(err.Error(), "api-resources") {
		t.Errorf("unknown kind: %v", err)
	}
}

func TestConfigCommands(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := &client.Config{CurrentContext: "a", Contexts: []client.Context{
		{Name: "a", Server: "https://a:8443", Token: "hu_secretAAAA", CertificateAuthority: "-----BEGIN CERTIFICATE-----\nxx\n", Tenant: "lab"},
		{Name: "b", Server: "https://b:8443", Token: "hu_secretBBBB"},
	}}
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}

	out, _, err := runCLI(ctx, t, "", "--config", path, "config", "get-contexts")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "*         a      https://a:8443   lab") {
		t.Errorf("get-contexts:\n%s", out)
	}

	if _, _, err := runCLI(ctx, t, "", "--config", path, "config", "use-context", "nope"); err == nil {
		t.Error("use-context of a missing context: no error")
	}
	out, _, err = runCLI(ctx, t, "", "--config", path, "config", "use-context", "b")
	if err != nil || !strings.Contains(out, `Switched to context "b"`) {
		t.Fatalf("use-context: %v %s", err, out)
	}
	out, _, _ = runCLI(ctx, t, "", "--config", path, "config", "current-context")
	if out != "b\n" {
		t.Errorf("current-context = %q, want b", out)
	}

	out, _, err = runCLI(ctx, t, "", "--config", path, "config", "view")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "secret") || strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("view shows secrets:\n%s", out)
	}
	if !strings.Contains(out, "token: REDACTED") || !strings.Contains(out, "currentContext: b") {
		t.Errorf("view:\n%s", out)
	}
	out, _, _ = runCLI(ctx, t, "", "--config", path, "config", "view", "--raw")
	if !strings.Contains(out, "hu_secretAAAA") {
		t.Errorf("view --raw hides the token:\n%s", out)
	}
}

func TestLoginRefusesPlainHTTP(t *testing.T) {
	_, _, err := runCLI(context.Background(), t, "", "--config", filepath.Join(t.TempDir(), "c"), "login", "http://x:1", "--token", "t")
	if err == nil || !strings.Contains(err.Error(), "https only") {
		t.Errorf("got %v", err)
	}
	if got, _ := normalizeServer("hearth.lan:8443/"); got != "https://hearth.lan:8443" {
		t.Errorf("normalizeServer = %q", got)
	}
}

func TestCompletion(t *testing.T) {
	ctx := context.Background()
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		out, _, err := runCLI(ctx, t, "", "completion", sh)
		if err != nil || !strings.Contains(out, "hearth") {
			t.Errorf("completion %s: %v (%d bytes)", sh, err, len(out))
		}
	}
	// Dynamic completion of kinds needs no server.
	out, _, err := runCLI(ctx, t, "", "__complete", "get", "netw")
	if err != nil || !strings.Contains(out, "networks\n") {
		t.Errorf("completing a kind: %v\n%s", err, out)
	}
}
