package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// exampleManifests are the files of examples/ that TestExamples applies,
// in this order: the tenant of examples/kinds first, since the other
// files there put their objects in it. A file added to examples/ must be
// listed here (or in exampleOthers), or the test fails: every example a
// newcomer may copy is known to apply.
var exampleManifests = []string{
	"lab.yaml",
	"kinds/tenant.yaml",
	"kinds/networks.yaml",
	"kinds/security-groups.yaml",
	"kinds/ssh-keys.yaml",
	"kinds/images.yaml",
	"kinds/volumes.yaml",
	"kinds/vms.yaml",
	"kinds/floating-ips.yaml",
	"kinds/machines.yaml",
	"kinds/storage-pools.yaml",
	"sandbox/lab.yaml",
	"sandbox/machines.yaml",
}

// exampleOthers are the files of examples/ that are not manifests, or
// manifests that need a sandbox's objects and are applied, twice, by the
// sandbox test named beside them.
var exampleOthers = []string{"README.md", "demo.sh",
	"sandbox/networks.yaml",       // TestSandboxNetworks: it needs the sandbox's ExternalNetwork internet
	"sandbox/cloudinit.yaml",      // TestSandboxCloudInit: it needs the sandbox's Debian image (--debian-image)
	"sandbox/shared-storage.yaml", // TestSandboxSharedStorage: it needs the sandbox's pools ceph and nfs (--shared-storage)
}

// unwrittenKinds are the kinds no person writes, so no example shows
// them: Hosts register themselves when their agent joins, and Events are
// written by the controllers and services.
var unwrittenKinds = []string{"Host", "Event"}

// TestExamples applies every manifest in examples/ twice with the real
// CLI against a real server: the first apply is accepted, the second
// says "unchanged" for every object. Together the files show every kind a
// person writes. Objects that need hosts or machines (VMs, volumes,
// machines) stay Pending here; the sandbox tests boot them.
func TestExamples(t *testing.T) {
	root, err := filepath.Abs("../examples")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		found = append(found, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		if !slices.Contains(exampleManifests, f) && !slices.Contains(exampleOthers, f) {
			t.Errorf("examples/%s is applied by no test: add it to exampleManifests in e2e/examples_test.go (or to exampleOthers if it is not a manifest)", f)
		}
	}
	for _, f := range append(slices.Clone(exampleManifests), exampleOthers...) {
		if !slices.Contains(found, f) {
			t.Errorf("examples/%s is listed in e2e/examples_test.go but does not exist", f)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	p := start(t, newMember(t, "examples"), "", true)
	config := filepath.Join(p.dataDir, "admin.conf")
	apply := func(what string, args ...string) (stdout string) {
		t.Helper()
		cmd := exec.Command(hearthBin, append([]string{"apply"}, args...)...)
		cmd.Env = append(os.Environ(), "HEARTH_CONFIG="+config)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: hearth apply %s: %v\n%s%s", what, strings.Join(args, " "), err, out.String(), errOut.String())
		}
		if errOut.Len() > 0 {
			t.Logf("%s: hearth apply %s warns:\n%s", what, strings.Join(args, " "), errOut.String())
		}
		return out.String()
	}

	applied := map[string]bool{} // kinds, in lowercase, as apply prints them
	for _, f := range exampleManifests {
		path := filepath.Join(root, f)
		first := lines(apply("examples/"+f+", first apply", "-f", path))
		if len(first) == 0 {
			t.Fatalf("examples/%s: the first apply printed nothing", f)
		}
		var objects []string
		for _, l := range first {
			obj, result, _ := strings.Cut(l, " ")
			// Objects an earlier file applied already may be unchanged.
			if result != "created" && result != "unchanged" {
				t.Errorf("examples/%s, first apply: %q, want created (or unchanged, for an object an earlier file applied)", f, l)
			}
			objects = append(objects, obj)
			kind, _, _ := strings.Cut(obj, "/")
			applied[kind] = true
		}
		var want []string
		for _, o := range objects {
			want = append(want, o+" unchanged")
		}
		if second := lines(apply("examples/"+f+", second apply", "-f", path)); !slices.Equal(second, want) {
			t.Errorf("examples/%s, second apply:\n%s\nwant:\n%s", f, strings.Join(second, "\n"), strings.Join(want, "\n"))
		}
	}

	// The directory at once, as examples/README.md suggests: nothing
	// left to change.
	for _, l := range lines(apply("examples/kinds/", "-f", filepath.Join(root, "kinds"))) {
		if !strings.HasSuffix(l, " unchanged") {
			t.Errorf("apply -f examples/kinds/ after its files: %q, want unchanged", l)
		}
	}

	for _, k := range api.Kinds() {
		if !slices.Contains(unwrittenKinds, k.Kind) && !applied[strings.ToLower(k.Kind)] {
			t.Errorf("no example in examples/ shows a %s: add one (examples/kinds/ has a file per topic)", k.Kind)
		}
	}
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
