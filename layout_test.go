package hearth_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The import rules of the house (docs/ARCHITECTURE.md, "Who may import
// what"): which room may use which. They are about what a package is built
// from, not its tests: an agent test may well start a real server.

const module = "hearth.dev/hearth/"

// importRule forbids the packages matching from to import the packages
// matching forbidden (patterns relative to the module: "agent" is that
// package, "agent/..." it and every package below it), unless allowed.
type importRule struct {
	from, forbidden, allowed []string
	// direct looks at a package's own imports only; otherwise everything
	// it is built from counts (go list's Deps).
	direct bool
	why    string
}

var importRules = []importRule{
	{
		from:      []string{"api/..."},
		forbidden: []string{"..."},
		why:       "the wire contract is a leaf: everyone imports it, it imports none of Hearth",
	},
	{
		from:      []string{"agent/..."},
		forbidden: []string{"server/..."},
		why:       "the agent talks to the server through the API (client), never through its code",
	},
	{
		from:      []string{"server/..."},
		forbidden: []string{"agent/...", "boot/..."},
		why:       "the server reaches agents and the boot service through the API and the agent's console endpoint only",
	},
	{
		from:      []string{"boot/..."},
		forbidden: []string{"server/...", "agent/..."},
		why:       "the boot service is a client of the API like an agent",
	},
	{
		from:      []string{"compute/...", "storage/...", "dataplane/...", "netns/...", "power/...", "dhcp/...", "cloudinit/..."},
		forbidden: []string{"client/...", "server/...", "agent/...", "boot/..."},
		why:       "host drivers take plain values and do the host's work; reading and writing the API is their caller's job",
	},
	{
		from:      []string{"client/...", "sandbox/..."},
		forbidden: []string{"server/..."},
		why:       "the client and the sandbox speak the API (types in api/) to a server they do not link",
	},
	{
		from:      []string{"cli/..."},
		forbidden: []string{"server/..."},
		allowed:   []string{"server", "server/etcd"},
		direct:    true,
		why:       "the CLI speaks the API; only `hearth server` starts a server, through server.Start and its configuration",
	},
	{
		from:      []string{"pki/...", "atomicfile/...", "flock/...", "process/...", "netns/...", "serving/...", "reconcile/...", "version/..."},
		forbidden: []string{"client/...", "server/...", "agent/...", "boot/...", "cli/..."},
		why:       "the shared primitives serve every room and depend on none",
	},
}

// pkgInfo is what go list says of a package.
type pkgInfo struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// match reports whether pattern (relative to the module) matches path.
func match(pattern, path string) bool {
	rel, ok := strings.CutPrefix(path, module)
	if !ok {
		return false // the standard library or another module
	}
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return rel == base || strings.HasPrefix(rel, base+"/")
	}
	return rel == pattern
}

func matchAny(patterns []string, path string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, path) })
}

// violations lists each import that breaks a rule, and each rule whose
// from matches no package (a rule about a room that was renamed guards
// nothing).
func violations(pkgs []pkgInfo, rules []importRule) []string {
	var out []string
	for _, r := range rules {
		matched := false
		for _, p := range pkgs {
			if !matchAny(r.from, p.ImportPath) {
				continue
			}
			matched = true
			deps := p.Deps
			if r.direct {
				deps = p.Imports
			}
			for _, d := range deps {
				if d != p.ImportPath && matchAny(r.forbidden, d) && !matchAny(r.allowed, d) && !matchAny(r.from, d) {
					out = append(out, fmt.Sprintf("%s imports %s: %s", strings.TrimPrefix(p.ImportPath, module), strings.TrimPrefix(d, module), r.why))
				}
			}
		}
		if !matched {
			out = append(out, fmt.Sprintf("no package matches %v: the rule %q guards nothing", r.from, r.why))
		}
	}
	return out
}

// TestImportRules: the rooms of the house import only what they may.
func TestImportRules(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-json=ImportPath,Imports,Deps", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkgInfo
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p pkgInfo
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	for _, v := range violations(pkgs, importRules) {
		t.Error(v)
	}
}

// TestImportRulesCatch: the check finds a forbidden import, direct or
// through another package, and lets allowed ones and a room's own
// packages through.
func TestImportRulesCatch(t *testing.T) {
	m := func(rel ...string) []string {
		for i := range rel {
			rel[i] = module + rel[i]
		}
		return rel
	}
	pkgs := []pkgInfo{
		{ImportPath: module + "agent", Imports: m("client", "agent/console"), Deps: append(m("client", "agent/console", "pki", "server/auth"), "fmt")},
		{ImportPath: module + "agent/console", Imports: m("pki"), Deps: m("pki")},
		{ImportPath: module + "cli", Imports: m("server", "server/etcd", "server/store"), Deps: m("server", "server/etcd", "server/store", "server/auth")},
		{ImportPath: module + "api/v1alpha1", Imports: []string{"net/url"}, Deps: []string{"net/url"}},
	}
	rules := []importRule{
		{from: []string{"agent/..."}, forbidden: []string{"server/..."}, why: "a"},
		{from: []string{"cli/..."}, forbidden: []string{"server/..."}, allowed: []string{"server", "server/etcd"}, direct: true, why: "c"},
		{from: []string{"api/..."}, forbidden: []string{"..."}, why: "l"},
		{from: []string{"dataplane/..."}, forbidden: []string{"client/..."}, why: "d"},
	}
	got := violations(pkgs, rules)
	want := []string{
		"agent imports server/auth: a",
		"cli imports server/store: c",
		`no package matches [dataplane/...]: the rule "d" guards nothing`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n got %q\nwant %q", got, want)
	}
}
