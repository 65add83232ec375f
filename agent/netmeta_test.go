package agent

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

func metaWorld() netInputs {
	in := nsWorld()
	in.VMs[0].Spec.CloudInit.UserData = "#!/bin/sh\necho red-a\n"
	in.VMs[2].Spec.CloudInit.UserData = "#!/bin/sh\necho blue-a\n"
	in.VMs[1].Spec.CloudInit.SSHKeys = []string{"carol"}
	key := func(tenant, name, k string) *api.SSHKey {
		return &api.SSHKey{Metadata: api.ObjectMeta{Tenant: tenant, Name: name}, Spec: api.SSHKeySpec{PublicKey: k}}
	}
	in.SSHKeys = []*api.SSHKey{key("red", "alice", "ssh-ed25519 AAAAalice"), key("red", "carol", "ssh-ed25519 AAAAcarol"),
		key("blue", "bob", "ssh-ed25519 AAAAbob")}
	return in
}

// TestMetaTables: every local NIC's documents are its own VM's, under its
// own network's VNI; the other tenant's VM of the same name at the same
// address is in its own network's table only.
func TestMetaTables(t *testing.T) {
	in := metaWorld()
	tables := metaTables(in, hostNetState(in))
	tests := []struct {
		vni  uint32
		ip   string
		path string
		want string
	}{
		{100, "192.168.1.10", "/latest/meta-data/instance-id", "uid-red-a"},
		{100, "192.168.1.10", "/latest/meta-data/local-ipv4", "192.168.1.10"},
		{100, "192.168.1.10", "/latest/meta-data/public-ipv4", "203.0.113.50"},
		{100, "192.168.1.10", "/latest/meta-data/public-keys/", "0=alice\n1=carol"},
		{100, "192.168.1.10", "/latest/user-data", "#!/bin/sh\necho red-a\n"},
		{100, "192.168.1.10", "/openstack/latest/user_data", "#!/bin/sh\necho red-a\n"},
		{100, "192.168.1.10", "/nocloud/user-data", "#!/bin/sh\necho red-a\n"},
		{100, "192.168.2.10", "/latest/meta-data/instance-id", "uid-red-c"},
		{100, "192.168.2.10", "/latest/meta-data/public-keys/", "0=carol"},
		{100, "192.168.2.10", "/latest/meta-data/local-hostname", "c"},
		{200, "192.168.1.10", "/latest/meta-data/instance-id", "uid-blue-a"},
		{200, "192.168.1.10", "/latest/meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAAbob\n"},
		{200, "192.168.1.10", "/nocloud/user-data", "#!/bin/sh\necho blue-a\n"},
	}
	for _, tt := range tests {
		tab := tables[tt.vni]
		if tab == nil {
			t.Fatalf("no table for VNI %d", tt.vni)
		}
		e := (*tab)[addrs(tt.ip)[0]]
		if e == nil {
			t.Errorf("VNI %d: no entry for %s", tt.vni, tt.ip)
			continue
		}
		if got, _ := e.Docs.Lookup(tt.path); string(got) != tt.want {
			t.Errorf("VNI %d %s %s = %q, want %q", tt.vni, tt.ip, tt.path, got, tt.want)
		}
	}
	if _, ok := (*tables[200])[addrs("192.168.2.10")[0]]; ok {
		t.Error("blue's table has red's c")
	}
	// b runs on h2: its own host answers it.
	if _, ok := (*tables[100])[addrs("192.168.1.11")[0]]; ok {
		t.Error("red's table on h1 has b, which runs on h2")
	}
	// No public-ipv4 without a floating IP.
	if _, ok := (*tables[100])[addrs("192.168.2.10")[0]].Docs.Lookup("/latest/meta-data/public-ipv4"); ok {
		t.Error("c has a public-ipv4 without a floating IP")
	}
}

// TestMetaHandler: a VM asks with its address and gets its own data;
// an address of no local NIC of the network is refused, whatever path it
// names, and the tree is read-only but for IMDSv2's token.
func TestMetaHandler(t *testing.T) {
	in := metaWorld()
	st := hostNetState(in)
	tables := metaTables(in, st)
	s := &networkServices{}
	s.table.Store(tables[100])
	h := s.metaHandler()
	do := func(method, from, path string) (int, string) {
		r := httptest.NewRequest(method, "http://169.254.169.254"+path, nil)
		r.RemoteAddr = from
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(b)
	}
	tests := []struct {
		method, from, path string
		code               int
		body               string // a prefix
	}{
		{"GET", "192.168.1.10:40000", "/latest/meta-data/instance-id", 200, "uid-red-a"},
		{"GET", "192.168.2.10:40000", "/latest/meta-data/instance-id", 200, "uid-red-c"},
		{"GET", "[::ffff:192.168.2.10]:40000", "/latest/meta-data/local-ipv4", 200, "192.168.2.10"},
		{"GET", "192.168.2.10:40000", "/openstack/latest/meta_data.json", 200, `{"hostname":"c"`},
		{"GET", "192.168.2.10:40000", "/latest/meta-data/nothing", 404, ""},
		// b is on another host, 192.168.1.99 is nobody's.
		{"GET", "192.168.1.11:40000", "/latest/meta-data/instance-id", 403, "no VM of this network on this host has the address 192.168.1.11"},
		{"GET", "192.168.1.99:40000", "/latest/user-data", 403, "no VM"},
		{"PUT", "192.168.1.10:40000", "/latest/api/token", 200, ""},
		{"PUT", "192.168.1.10:40000", "/latest/user-data", 405, ""},
		{"POST", "192.168.1.10:40000", "/latest/meta-data/instance-id", 405, ""},
	}
	for _, tt := range tests {
		code, body := do(tt.method, tt.from, tt.path)
		if code != tt.code || !strings.HasPrefix(body, tt.body) {
			t.Errorf("%s %s from %s = %d %q, want %d %q…", tt.method, tt.path, tt.from, code, body, tt.code, tt.body)
		}
	}
	// The same address in the other tenant's network is the other VM.
	s.table.Store(tables[200])
	if code, body := do("GET", "192.168.1.10:40000", "/latest/meta-data/instance-id"); code != 200 || body != "uid-blue-a" {
		t.Errorf("blue's a = %d %q", code, body)
	}
}
