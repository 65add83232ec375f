package cloudinit

import (
	"encoding/json"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Instance is what a metadata service tells one VM about itself when it
// asks from one of its NICs: the VM's seed, and the NIC's addresses. The
// same Seed makes the NoCloud documents, so a guest reads the same
// instance-id, hostname, keys and user-data from the seed disk, the EC2
// tree, the OpenStack tree and NoCloud over HTTP.
type Instance struct {
	Seed
	// KeyNames name Seed.SSHKeys, in their order (the SSHKey objects'
	// names); a missing name becomes "key-N".
	KeyNames []string
	// Project is the VM's tenant.
	Project string
	// MAC and LocalIPv4 are the asking NIC's; PublicIPv4 is the floating
	// IP that points at it, "" for none.
	MAC, LocalIPv4, PublicIPv4 string
	// Interfaces are all of the VM's NICs, for network_data.json.
	Interfaces []Interface
	// DNS are the resolvers the VM's networks hand out.
	DNS []string
}

// Interface is one NIC of the VM.
type Interface struct {
	// MAC is the NIC's Ethernet address (lowercase), MTU its network's.
	MAC string
	MTU int
}

// Documents are an instance's metadata: every path a metadata service
// answers, without the leading slash, with "latest" for the version, and
// its body. A listing's path ends in "/" and its body names one entry a
// line, a directory with a trailing "/", as EC2's does.
type Documents map[string][]byte

// Documents builds the instance's three trees: EC2 (latest/meta-data/,
// latest/user-data), OpenStack (openstack/latest/meta_data.json,
// network_data.json, user_data) and NoCloud (nocloud/meta-data,
// user-data, vendor-data and, when the VM has one, network-config).
func (i Instance) Documents() Documents {
	d := Documents{}
	userData := i.UserDataBytes()
	keys := i.keys()
	names := make([]string, len(keys))
	for n := range keys {
		names[n] = "key-" + strconv.Itoa(n)
		if n < len(i.KeyNames) && i.KeyNames[n] != "" {
			names[n] = i.KeyNames[n]
		}
	}
	id := i.InstanceID
	if id == "" {
		id = i.Hostname
	}

	// EC2: the 2009-04-04 layout every client knows, any version.
	md := map[string]string{
		"instance-id":    id,
		"hostname":       i.Hostname,
		"local-hostname": i.Hostname,
		"local-ipv4":     i.LocalIPv4,
		"mac":            i.MAC,
		"public-ipv4":    i.PublicIPv4,
	}
	var list []string
	for k, v := range md {
		if v != "" {
			d["latest/meta-data/"+k] = []byte(v)
			list = append(list, k)
		}
	}
	if len(keys) > 0 {
		list = append(list, "public-keys/")
		var kl []string
		for n, k := range keys {
			kl = append(kl, strconv.Itoa(n)+"="+names[n])
			d["latest/meta-data/public-keys/"+strconv.Itoa(n)+"/"] = []byte("openssh-key")
			d["latest/meta-data/public-keys/"+strconv.Itoa(n)+"/openssh-key"] = []byte(k + "\n")
		}
		d["latest/meta-data/public-keys/"] = []byte(strings.Join(kl, "\n"))
	}
	sort.Strings(list)
	d["latest/meta-data/"] = []byte(strings.Join(list, "\n"))
	d["latest/user-data"] = userData
	d["latest/"] = []byte("meta-data/\nuser-data")
	d[""] = []byte("latest")

	// OpenStack.
	pub := map[string]string{}
	type key struct {
		Name string `json:"name"`
		Type string `json:"type"`
		Data string `json:"data"`
	}
	keyList := []key{}
	for n, k := range keys {
		pub[names[n]] = k
		keyList = append(keyList, key{Name: names[n], Type: "ssh", Data: k})
	}
	d["openstack/latest/meta_data.json"] = mustJSON(map[string]any{
		"uuid": id, "name": i.Hostname, "hostname": i.Hostname, "launch_index": 0,
		"project_id": i.Project, "public_keys": pub, "keys": keyList, "meta": map[string]string{},
	})
	d["openstack/latest/network_data.json"] = i.networkData()
	d["openstack/latest/user_data"] = userData
	d["openstack/latest/vendor_data.json"] = []byte("{}")
	d["openstack/latest/vendor_data2.json"] = []byte("{}")
	d["openstack/latest/"] = []byte("meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\nvendor_data2.json")
	d["openstack/"] = []byte("latest")

	// NoCloud over HTTP (ds=nocloud;s=http://169.254.169.254/nocloud/).
	d["nocloud/meta-data"] = i.MetaData()
	d["nocloud/user-data"] = userData
	d["nocloud/vendor-data"] = []byte{}
	list = []string{"meta-data", "user-data", "vendor-data"}
	if i.NetworkConfig != "" {
		d["nocloud/network-config"] = []byte(i.NetworkConfig)
		list = append(list, "network-config")
	}
	d["nocloud/"] = []byte(strings.Join(list, "\n"))
	return d
}

// networkData is OpenStack's network_data.json: a link per NIC, each
// configured by DHCP (the addresses are IPAM's static leases), and the
// resolvers.
func (i Instance) networkData() []byte {
	type link struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		MAC  string `json:"ethernet_mac_address"`
		MTU  int    `json:"mtu,omitempty"`
	}
	type network struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Link string `json:"link"`
	}
	type service struct {
		Type    string `json:"type"`
		Address string `json:"address"`
	}
	nd := struct {
		Links    []link    `json:"links"`
		Networks []network `json:"networks"`
		Services []service `json:"services"`
	}{Links: []link{}, Networks: []network{}, Services: []service{}}
	for n, ifc := range i.Interfaces {
		id := "nic" + strconv.Itoa(n)
		nd.Links = append(nd.Links, link{ID: id, Type: "phy", MAC: ifc.MAC, MTU: ifc.MTU})
		nd.Networks = append(nd.Networks, network{ID: "network" + strconv.Itoa(n), Type: "ipv4_dhcp", Link: id})
	}
	for _, a := range i.DNS {
		nd.Services = append(nd.Services, service{Type: "dns", Address: a})
	}
	return mustJSON(nd)
}

// version is a metadata version in a path: EC2's and OpenStack's are
// dates; "latest" is the newest.
var version = regexp.MustCompile(`^(latest|[0-9]{4}-[0-9]{2}-[0-9]{2})$`)

// Lookup finds the document an HTTP path asks for: any version of the
// EC2 and OpenStack trees is the one tree there is, and a listing is
// found with or without its trailing "/". Paths with "." or ".."
// segments, or empty ones but the last, find nothing.
func (d Documents) Lookup(path string) ([]byte, bool) {
	p := strings.TrimPrefix(path, "/")
	segs := strings.Split(p, "/")
	for n, s := range segs {
		if s == "." || s == ".." || (s == "" && n != len(segs)-1) {
			return nil, false
		}
	}
	v := 0
	if segs[0] == "openstack" {
		v = 1
	}
	if len(segs) > v && version.MatchString(segs[v]) {
		segs[v] = "latest"
	}
	p = strings.Join(segs, "/")
	if b, ok := d[p]; ok {
		return b, true
	}
	if !strings.HasSuffix(p, "/") {
		b, ok := d[p+"/"]
		return b, ok
	}
	return nil, false
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("cloudinit: marshal metadata: " + err.Error()) // only plain values get here
	}
	return b
}
