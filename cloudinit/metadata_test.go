package cloudinit

import (
	"encoding/json"
	"testing"
)

func testInstance() Instance {
	return Instance{
		Seed:     Seed{InstanceID: "uid-1", Hostname: "web-1", SSHKeys: []string{key1, key2}, UserData: "#!/bin/sh\necho hi\n"},
		KeyNames: []string{"alice", ""}, Project: "red",
		MAC: "52:54:00:00:00:01", LocalIPv4: "10.0.0.5", PublicIPv4: "192.0.2.10",
		Interfaces: []Interface{{MAC: "52:54:00:00:00:01", MTU: 1450}}, DNS: []string{"10.0.0.1"},
	}
}

func TestDocumentsLookup(t *testing.T) {
	d := testInstance().Documents()
	tests := []struct {
		path string
		want string // "" with found false: not found
		ok   bool
	}{
		{"/latest/meta-data/instance-id", "uid-1", true},
		{"/2009-04-04/meta-data/instance-id", "uid-1", true},
		{"/latest/meta-data/local-ipv4", "10.0.0.5", true},
		{"/latest/meta-data/public-ipv4", "192.0.2.10", true},
		{"/latest/meta-data/local-hostname", "web-1", true},
		{"/latest/meta-data/mac", "52:54:00:00:00:01", true},
		{"/latest/meta-data/", "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\npublic-ipv4\npublic-keys/", true},
		{"/latest/meta-data", "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\npublic-ipv4\npublic-keys/", true},
		{"/latest/meta-data/public-keys/", "0=alice\n1=key-1", true},
		{"/latest/meta-data/public-keys/0/", "openssh-key", true},
		{"/latest/meta-data/public-keys/1/openssh-key", key2 + "\n", true},
		{"/latest/user-data", "#!/bin/sh\necho hi\n", true},
		{"/openstack/latest/user_data", "#!/bin/sh\necho hi\n", true},
		{"/openstack/2018-08-27/user_data", "#!/bin/sh\necho hi\n", true},
		{"/openstack", "latest", true},
		{"/nocloud/user-data", "#!/bin/sh\necho hi\n", true},
		{"/nocloud/vendor-data", "", true},
		{"/nocloud/meta-data", "instance-id: \"uid-1\"\nlocal-hostname: \"web-1\"\npublic-keys:\n- \"" + key1 + "\"\n- \"" + key2 + "\"\n", true},
		{"/nocloud/network-config", "", false},
		{"/latest/meta-data/../user-data", "", false},
		{"/latest//meta-data", "", false},
		{"/other", "", false},
		{"/latest/meta-data/instance-id/x", "", false},
	}
	for _, tt := range tests {
		got, ok := d.Lookup(tt.path)
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDocumentsOpenStack(t *testing.T) {
	d := testInstance().Documents()
	var md struct {
		UUID       string            `json:"uuid"`
		Hostname   string            `json:"hostname"`
		Project    string            `json:"project_id"`
		PublicKeys map[string]string `json:"public_keys"`
	}
	if err := json.Unmarshal(d["openstack/latest/meta_data.json"], &md); err != nil {
		t.Fatal(err)
	}
	if md.UUID != "uid-1" || md.Hostname != "web-1" || md.Project != "red" || md.PublicKeys["alice"] != key1 || md.PublicKeys["key-1"] != key2 {
		t.Errorf("meta_data.json = %+v", md)
	}
	var nd struct {
		Links []struct {
			MAC string `json:"ethernet_mac_address"`
			MTU int    `json:"mtu"`
		} `json:"links"`
		Networks []struct{ Type, Link string }    `json:"networks"`
		Services []struct{ Type, Address string } `json:"services"`
	}
	if err := json.Unmarshal(d["openstack/latest/network_data.json"], &nd); err != nil {
		t.Fatal(err)
	}
	if len(nd.Links) != 1 || nd.Links[0].MAC != "52:54:00:00:00:01" || nd.Links[0].MTU != 1450 ||
		len(nd.Networks) != 1 || nd.Networks[0].Type != "ipv4_dhcp" || nd.Networks[0].Link != "nic0" ||
		len(nd.Services) != 1 || nd.Services[0].Address != "10.0.0.1" {
		t.Errorf("network_data.json = %s", d["openstack/latest/network_data.json"])
	}
}

// A NIC without a floating IP has no public-ipv4 at all (EC2 leaves the
// key out, and clients read its absence), and a network-config appears
// in NoCloud only when the VM has one.
func TestDocumentsOptional(t *testing.T) {
	i := testInstance()
	i.PublicIPv4, i.SSHKeys, i.NetworkConfig = "", nil, "version: 2\n"
	d := i.Documents()
	if _, ok := d.Lookup("/latest/meta-data/public-ipv4"); ok {
		t.Error("public-ipv4 is there without a floating IP")
	}
	if got := string(d["latest/meta-data/"]); got != "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac" {
		t.Errorf("listing = %q", got)
	}
	if got, _ := d.Lookup("/nocloud/network-config"); string(got) != "version: 2\n" {
		t.Errorf("network-config = %q", got)
	}
}
