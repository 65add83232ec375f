package cloudinit

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	key1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHearthKeyOne one@hearth"
	key2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQHearthKeyTwo two@hearth"
)

func TestMetaData(t *testing.T) {
	tests := []struct {
		name string
		seed Seed
		want string
	}{
		{
			name: "full",
			seed: Seed{InstanceID: "0b6e-uid", Hostname: "vm1", SSHKeys: []string{key1, key2}},
			want: "instance-id: \"0b6e-uid\"\nlocal-hostname: \"vm1\"\npublic-keys:\n- \"" + key1 + "\"\n- \"" + key2 + "\"\n",
		},
		{
			name: "no keys",
			seed: Seed{InstanceID: "0b6e-uid", Hostname: "vm1"},
			want: "instance-id: \"0b6e-uid\"\nlocal-hostname: \"vm1\"\n",
		},
		{
			name: "blank keys dropped and keys trimmed",
			seed: Seed{InstanceID: "i", Hostname: "vm1", SSHKeys: []string{"", "  ", " " + key1 + "\n"}},
			want: "instance-id: \"i\"\nlocal-hostname: \"vm1\"\npublic-keys:\n- \"" + key1 + "\"\n",
		},
		{
			name: "instance id falls back to the hostname",
			seed: Seed{Hostname: "vm1"},
			want: "instance-id: \"vm1\"\nlocal-hostname: \"vm1\"\n",
		},
		{
			name: "values that look like numbers stay strings",
			seed: Seed{InstanceID: "12345", Hostname: "007"},
			want: "instance-id: \"12345\"\nlocal-hostname: \"007\"\n",
		},
		{
			name: "a value cannot add keys, and control characters are escaped",
			seed: Seed{InstanceID: "i", Hostname: "evil\ninstance-id: other\x00"},
			want: "instance-id: \"i\"\nlocal-hostname: \"evil\\ninstance-id: other\\u0000\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tt.seed.MetaData())
			if got != tt.want {
				t.Errorf("MetaData() =\n%s\nwant\n%s", got, tt.want)
			}
			var md map[string]any
			if err := yaml.Unmarshal([]byte(got), &md); err != nil {
				t.Fatalf("meta-data does not parse: %v", err)
			}
			if id, _ := md["instance-id"].(string); id == "" {
				t.Errorf("instance-id = %v, want a non-empty string", md["instance-id"])
			}
			if h, _ := md["local-hostname"].(string); h != tt.seed.Hostname || len(md) > 3 {
				t.Errorf("meta-data read back as %v, want local-hostname %q and no other keys", md, tt.seed.Hostname)
			}
		})
	}
}

func TestUserDataBytes(t *testing.T) {
	tests := []struct {
		name     string
		seed     Seed
		want     string // exact bytes, if set
		wantKeys map[string]any
	}{
		{
			name: "empty becomes a minimal cloud-config",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}},
			want: "#cloud-config\nhostname: vm1\nssh_authorized_keys:\n- " + key1 + "\n",
		},
		{
			name: "empty without hostname or keys",
			seed: Seed{},
			want: "#cloud-config\n",
		},
		{
			name: "script is kept as is",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#!/bin/sh\necho hi\n"},
			want: "#!/bin/sh\necho hi\n",
		},
		{
			name: "include and other formats are kept as is",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#include\nhttp://example.invalid/ud\n"},
			want: "#include\nhttp://example.invalid/ud\n",
		},
		{
			name: "missing keys are appended, comments kept",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#cloud-config\n# my packages\npackages:\n  - nginx\n"},
			want: "#cloud-config\n# my packages\npackages:\n  - nginx\nhostname: vm1\nssh_authorized_keys:\n- " + key1 + "\n",
		},
		{
			name: "missing final newline",
			seed: Seed{Hostname: "vm1", UserData: "#cloud-config\nruncmd: [ls]"},
			want: "#cloud-config\nruncmd: [ls]\nhostname: vm1\n",
		},
		{
			name: "header only",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#cloud-config\n"},
			want: "#cloud-config\nhostname: vm1\nssh_authorized_keys:\n- " + key1 + "\n",
		},
		{
			name: "user's hostname wins",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#cloud-config\nhostname: mine\n"},
			want: "#cloud-config\nhostname: mine\nssh_authorized_keys:\n- " + key1 + "\n",
		},
		{
			name: "user's fqdn wins over the hostname",
			seed: Seed{Hostname: "vm1", UserData: "#cloud-config\nfqdn: web.example.org\n"},
			want: "#cloud-config\nfqdn: web.example.org\n",
		},
		{
			name: "user's keys win, even an empty list",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#cloud-config\nssh_authorized_keys: []\n"},
			want: "#cloud-config\nssh_authorized_keys: []\nhostname: vm1\n",
		},
		{
			name: "everything set: unchanged",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#cloud-config\nhostname: a\nssh_authorized_keys:\n  - " + key2 + "\n"},
			want: "#cloud-config\nhostname: a\nssh_authorized_keys:\n  - " + key2 + "\n",
		},
		{
			name: "broken YAML is kept for cloud-init to report",
			seed: Seed{Hostname: "vm1", UserData: "#cloud-config\npackages: [nginx\n"},
			want: "#cloud-config\npackages: [nginx\n",
		},
		{
			name: "a list is not a cloud-config: kept",
			seed: Seed{Hostname: "vm1", UserData: "#cloud-config\n- a\n"},
			want: "#cloud-config\n- a\n",
		},
		{
			name: "flow mapping is rewritten",
			seed: Seed{Hostname: "vm1", SSHKeys: []string{key1}, UserData: "#cloud-config\n{packages: [nginx]}\n"},
			wantKeys: map[string]any{
				"packages":            []any{"nginx"},
				"hostname":            "vm1",
				"ssh_authorized_keys": []any{key1},
			},
		},
		{
			name: "explicit document end is rewritten",
			seed: Seed{Hostname: "vm1", UserData: "#cloud-config\npackages: [nginx]\n...\n"},
			wantKeys: map[string]any{
				"packages": []any{"nginx"},
				"hostname": "vm1",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tt.seed.UserDataBytes())
			if tt.want != "" && got != tt.want {
				t.Errorf("UserDataBytes() =\n%s\nwant\n%s", got, tt.want)
			}
			if tt.wantKeys == nil {
				return
			}
			if !strings.HasPrefix(got, "#cloud-config\n") {
				t.Errorf("UserDataBytes() = %q, want a #cloud-config", got)
			}
			var doc map[string]any
			if err := yaml.Unmarshal([]byte(got), &doc); err != nil {
				t.Fatalf("result does not parse: %v\n%s", err, got)
			}
			if !equalJSON(t, doc, tt.wantKeys) {
				t.Errorf("UserDataBytes() parses to %v, want %v", doc, tt.wantKeys)
			}
		})
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}
