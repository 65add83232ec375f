package v1alpha1

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const testTenant = "lab"

// roundTrip sends obj through JSON and Decode, as an object read from a
// file or a request would be.
func roundTrip(t *testing.T, obj Object) Object {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("marshal %s: %v", Ref(obj), err)
	}
	out, err := Decode(data)
	if err != nil {
		t.Fatalf("decode %s: %v\n%s", Ref(obj), err, data)
	}
	return out
}

// example returns the example of kind with its tenant set as a caller would.
func example(t *testing.T, kind string) Object {
	t.Helper()
	obj, ok := Examples()[kind]
	if !ok {
		t.Fatalf("no example for kind %s", kind)
	}
	if kinds[kind].Scope == TenantScoped {
		obj.GetMetadata().Tenant = testTenant
	}
	return obj
}

func fields(es FieldErrors) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Field
	}
	slices.Sort(out)
	return out
}

func TestEveryKindHasAValidExample(t *testing.T) {
	examples := Examples()
	for kind := range examples {
		if _, ok := kinds[kind]; !ok {
			t.Errorf("Examples has %s, which is not a registered kind", kind)
		}
	}
	for _, k := range Kinds() {
		t.Run(k.Kind, func(t *testing.T) {
			if _, ok := examples[k.Kind]; !ok {
				t.Fatalf("Examples() has no %s; every kind needs one", k.Kind)
			}
			ex := example(t, k.Kind)
			if ex.GetTypeMeta().Kind != k.Kind || ex.GetTypeMeta().APIVersion != APIVersion {
				t.Fatalf("example has type %+v", *ex.GetTypeMeta())
			}
			obj := roundTrip(t, ex)
			if es := Prepare(obj, nil); len(es) > 0 {
				t.Fatalf("example is invalid: %v", es)
			}
			// Defaults are stable: a prepared object read back prepares to
			// the same spec.
			again := roundTrip(t, obj)
			if es := Prepare(again, nil); len(es) > 0 {
				t.Fatalf("prepared example is invalid when read back: %v", es)
			}
			if !SpecEqual(obj, again) {
				a, _ := json.Marshal(obj.SpecAny())
				b, _ := json.Marshal(again.SpecAny())
				t.Errorf("defaulting is not stable:\n%s\n%s", a, b)
			}
			// An update that changes nothing is valid.
			if es := Prepare(DeepCopy(obj), obj); len(es) > 0 {
				t.Errorf("unchanged update is invalid: %v", es)
			}
			// Metadata follows the kind's scope.
			wrong := DeepCopy(obj)
			switch k.Scope {
			case TenantScoped:
				wrong.GetMetadata().Tenant = ""
			case ClusterScoped:
				wrong.GetMetadata().Tenant = testTenant
			default:
				wrong.GetMetadata().Tenant = "Not_A_Name"
			}
			if got := fields(Prepare(wrong, nil)); !slices.Equal(got, []string{"metadata.tenant"}) {
				t.Errorf("wrong tenant for scope %s: got errors at %v", k.Scope, got)
			}
			// Tables and placement work on full and on empty objects.
			for _, o := range []Object{obj, k.New()} {
				for _, c := range k.Columns {
					_ = c.Get(o)
				}
				if k.PlacedOn != nil {
					_ = k.PlacedOn(o)
				}
				_ = o.CommonStatus()
			}
			for _, c := range k.Columns {
				if c.Name == "" || c.Name != strings.ToUpper(c.Name) {
					t.Errorf("column %q should be an upper-case name", c.Name)
				}
			}
		})
	}
}

func TestKindNames(t *testing.T) {
	seen := map[string]string{}
	claim := func(name, kind string) {
		if other, dup := seen[name]; dup && other != kind {
			t.Errorf("name %q is used by %s and %s", name, other, kind)
		}
		seen[name] = kind
	}
	for _, k := range Kinds() {
		claim(strings.ToLower(k.Kind), k.Kind)
		if k.Plural != strings.ToLower(k.Plural) || k.Plural == "" {
			t.Errorf("%s: plural %q must be lowercase", k.Kind, k.Plural)
		}
		claim(k.Plural, k.Kind)
		for _, s := range k.ShortNames {
			if s != strings.ToLower(s) {
				t.Errorf("%s: short name %q must be lowercase", k.Kind, s)
			}
			claim(s, k.Kind)
			if got, err := KindByName(s); err != nil || got.Kind != k.Kind {
				t.Errorf("KindByName(%q) = %v, %v; want %s", s, got, err, k.Kind)
			}
		}
		if !strings.HasSuffix(k.Description, ".") || strings.Count(k.Description, ". ") > 0 {
			t.Errorf("%s: description %q should be one sentence", k.Kind, k.Description)
		}
		if k.SharedReadable && k.Scope != TenantOptional {
			t.Errorf("%s: SharedReadable needs scope TenantOptional", k.Kind)
		}
	}
	for _, name := range []string{"vm", "vms", "VirtualMachine", "virtualmachines", "fip", "sg", "img", "mp"} {
		if _, err := KindByName(name); err != nil {
			t.Errorf("KindByName(%q): %v", name, err)
		}
	}
}

type invalidCase struct {
	name string
	kind string
	// edit changes the kind's example into the object under test.
	edit func(o Object)
	// update makes the case an update of the unchanged example.
	update bool
	// want are the exact field paths of the errors, sorted.
	want []string
	// detail, when set, must be part of the first error's detail.
	detail string
}

func TestInvalidObjects(t *testing.T) {
	ed25519Blob := "AAAAC3NzaC1lZDI1NTE5AAAAIIcCK0mzKXM8xFOUST82s2fipGzyqvJ2kSYsHaThbzek"
	cases := []invalidCase{
		// Tenant, User, Host, Event, Network, Subnet.
		{name: "negative quota", kind: "Tenant", edit: func(o Object) { o.(*Tenant).Spec.Quota.VCPUs = -1 },
			want: []string{"spec.quota.vcpus"}, detail: "-1 is negative"},
		{name: "unknown role", kind: "User", edit: func(o Object) { o.(*User).Spec.Role = "root" },
			want: []string{"spec.role"}, detail: `"root" is not one of`},
		{name: "tenant admin without tenant", kind: "User", edit: func(o Object) { o.(*User).Spec.Role = RoleTenantAdmin },
			want: []string{"spec.tenant"}},
		{name: "bad address and overcommit", kind: "Host", edit: func(o Object) {
			h := o.(*Host)
			h.Spec.Address, h.Spec.CPUOvercommit = "192.168.1", 100
		}, want: []string{"spec.address", "spec.cpuOvercommit"}},
		{name: "event without reason", kind: "Event", edit: func(o Object) {
			e := o.(*Event)
			e.Spec.Type, e.Spec.Reason, e.Spec.InvolvedObject.Kind = "Bad", "", "Nope"
		}, want: []string{"spec.involvedObject.kind", "spec.reason", "spec.type"}},
		{name: "tiny mtu", kind: "Network", edit: func(o Object) { o.(*Network).Spec.MTU = 100 },
			want: []string{"spec.mtu"}},
		{name: "dns domain not a name", kind: "Network", edit: func(o Object) { o.(*Network).Spec.DNSDomain = "Web_Servers..lab" },
			want: []string{"spec.dnsDomain"}, detail: "is not a host name"},
		{name: "cidr /33", kind: "Subnet", edit: func(o Object) { o.(*Subnet).Spec.CIDR = "10.0.0.0/33" },
			want: []string{"spec.cidr"}, detail: `"10.0.0.0/33" is not a CIDR`},
		{name: "gateway change", kind: "Subnet", update: true, edit: func(o Object) { o.(*Subnet).Spec.Gateway = "10.0.0.254" },
			want: []string{"spec.gateway"}, detail: "cannot change"},

		// Site.
		{name: "bad tags", kind: "Site", edit: func(o Object) { o.(*Site).Spec.Tags = []string{"home", "home", "has space", ""} },
			want: []string{"spec.tags[1]", "spec.tags[2]", "spec.tags[3]"}, detail: "listed twice"},
		{name: "bad overlay", kind: "Site", edit: func(o Object) {
			o.(*Site).Spec.Overlay = &SiteOverlay{CIDR: "10.255.1.1/24", ListenPort: 70000, MTU: 100}
		}, want: []string{"spec.overlay.cidr", "spec.overlay.listenPort", "spec.overlay.mtu"}, detail: "did you mean 10.255.1.0/24?"},
		{name: "overlay without cidr", kind: "Site", edit: func(o Object) { o.(*Site).Spec.Overlay = &SiteOverlay{} },
			want: []string{"spec.overlay.cidr"}, detail: "is required"},

		// ExternalNetwork.
		{name: "addresses outside", kind: "ExternalNetwork", edit: func(o Object) {
			s := &o.(*ExternalNetwork).Spec
			s.Gateway, s.RangeStart, s.RangeEnd = "192.168.2.1", "192.168.1.250", "192.168.1.200"
			s.DNSServers = []string{"1.1.1.1", "one"}
			s.Interface = "br/ext"
		}, want: []string{"spec.dnsServers[1]", "spec.gateway", "spec.interface", "spec.rangeEnd"}, detail: "192.168.2.1 is outside 192.168.1.0/24"},
		{name: "ipv6 without gateway", kind: "ExternalNetwork", edit: func(o Object) {
			s := &o.(*ExternalNetwork).Spec
			s.CIDR, s.Gateway, s.RangeStart, s.RangeEnd = "2001:db8::/64", "", "", ""
		}, want: []string{"spec.gateway"}},
		{name: "bad ipv6 side", kind: "ExternalNetwork", edit: func(o Object) {
			o.(*ExternalNetwork).Spec.IPv6 = &ExternalIPv6{CIDR: "2001:db8:1::/56", Gateway: "10.0.0.1", Prefixes: []DelegatedPrefix{
				{Prefix: "2001:db8:2::/48", Tenant: "red"},
				{Prefix: "2001:db8:2:1::/64", Tenant: "blue"},
				{Prefix: "2001:db8:3::/128", Tenant: ""},
				{Prefix: "fe80::/64", Tenant: "Not A Name"},
			}}
		}, want: []string{"spec.ipv6.cidr", "spec.ipv6.gateway", "spec.ipv6.prefixes[1].prefix", "spec.ipv6.prefixes[2].prefix", "spec.ipv6.prefixes[2].tenant", "spec.ipv6.prefixes[3].prefix", "spec.ipv6.prefixes[3].tenant"},
			detail: "2001:db8:1::/56 is not an IPv6 /64"},
		{name: "ipv6 side overlapping its link", kind: "ExternalNetwork", edit: func(o Object) {
			o.(*ExternalNetwork).Spec.IPv6 = &ExternalIPv6{CIDR: "2001:db8:1::/64", Gateway: "2001:db8:9::1", Prefixes: []DelegatedPrefix{{Prefix: "2001:db8::/32", Tenant: "red"}, {Prefix: "2001:db9:2::/48", Tenant: "blue"}, {Prefix: "2001:db9:2:1::/64", Tenant: "red"}}}
		}, want: []string{"spec.ipv6.gateway", "spec.ipv6.prefixes[0].prefix", "spec.ipv6.prefixes[2].prefix"}, detail: "neither in 2001:db8:1::/64 nor link-local"},
		{name: "ipv6 side without cidr", kind: "ExternalNetwork", edit: func(o Object) {
			o.(*ExternalNetwork).Spec.IPv6 = &ExternalIPv6{}
		}, want: []string{"spec.ipv6.cidr", "spec.ipv6.gateway"}, detail: "is required"},
		{name: "cidr change", kind: "ExternalNetwork", update: true, edit: func(o Object) {
			s := &o.(*ExternalNetwork).Spec
			s.CIDR, s.Gateway, s.RangeStart, s.RangeEnd = "192.168.0.0/16", "192.168.0.1", "", ""
		}, want: []string{"spec.cidr"}, detail: "cannot change"},

		// Machine.
		{name: "bad mac and arch", kind: "Machine", edit: func(o Object) {
			m := o.(*Machine)
			m.Spec.MAC, m.Spec.Architecture, m.Spec.Hostname = "52:54:00:zz:00:01", "sparc", "Not A Host"
		}, want: []string{"spec.architecture", "spec.hostname", "spec.mac"}},
		{name: "no mac", kind: "Machine", edit: func(o Object) { o.(*Machine).Spec.MAC = "" },
			want: []string{"spec.mac"}, detail: "is required"},
		{name: "ipmi without address", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverIPMI, Username: "admin"}
		}, want: []string{"spec.power.address"}},
		{name: "settings of another driver", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverNone, Address: "10.0.0.5", WOL: &WakeOnLAN{}}
		}, want: []string{"spec.power.address", "spec.power.wol"}},
		{name: "webhook driver without webhook", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverWebhook}
		}, want: []string{"spec.power.webhook"}},
		{name: "bad webhook", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverWebhook, Webhook: &PowerWebhook{
				OnURL: "ftp://plug/on", Method: "DELETE", BodyTemplate: "{{ .State", StatusURL: "http://plug/status", StatusOnMatch: "(on",
				Headers: map[string]string{"Bad Header": "x"},
			}}
		}, want: []string{"spec.power.webhook.bodyTemplate", "spec.power.webhook.headers", "spec.power.webhook.method",
			"spec.power.webhook.offURL", "spec.power.webhook.onURL", "spec.power.webhook.statusOnMatch"}},
		{name: "bad wol", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverWOL, WOL: &WakeOnLAN{Broadcast: "everyone", Port: 70000}}
		}, want: []string{"spec.power.wol.broadcast", "spec.power.wol.port"}},
		{name: "mac change", kind: "Machine", update: true, edit: func(o Object) { o.(*Machine).Spec.MAC = "52:54:00:aa:bb:02" },
			want: []string{"spec.mac"}, detail: "cannot change"},
		{name: "inline password", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverIPMI, Address: "bmc1", Username: "hearth", Password: "s3cret"}
		}, want: []string{"spec.power.password"}, detail: "stored in plain text; put it in a Secret"},
		{name: "inline password added", kind: "Machine", update: true, edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverIPMI, Address: "bmc1", Password: "s3cret"}
		}, want: []string{"spec.power.password"}, detail: "stored in plain text"},
		{name: "inline credential header", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverWebhook, Webhook: &PowerWebhook{OnURL: "http://plug/on", OffURL: "http://plug/off",
				Headers: map[string]string{"Content-Type": "application/json", "X-Api-Key": "k3y"}}}
		}, want: []string{"spec.power.webhook.headers"}, detail: `"X-Api-Key" looks like a credential`},
		{name: "bad secret references", kind: "Machine", edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverWebhook, PasswordSecret: &SecretKeyRef{Name: "bmc"}, Webhook: &PowerWebhook{
				OnURL: "http://plug/on", OffURL: "http://plug/off", Headers: map[string]string{"content-type": "text/plain"},
				SecretHeaders: []SecretHeader{
					{Name: "Authorization", ValueFrom: HeaderSource{SecretKeyRef: &SecretKeyRef{Name: "Plug Token", Key: "a b"}}},
					{Name: "authorization", ValueFrom: HeaderSource{SecretKeyRef: &SecretKeyRef{Name: "plug", Key: "token"}}},
					{Name: "Content-Type"},
				}}}
		}, want: []string{"spec.power.passwordSecret", "spec.power.passwordSecret.key", "spec.power.webhook.secretHeaders[0].valueFrom.secretKeyRef.key",
			"spec.power.webhook.secretHeaders[0].valueFrom.secretKeyRef.name", "spec.power.webhook.secretHeaders[1].name",
			"spec.power.webhook.secretHeaders[2].name", "spec.power.webhook.secretHeaders[2].valueFrom.secretKeyRef"}},
		{name: "password twice", kind: "Machine", update: true, edit: func(o Object) {
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverRedfish, Address: "bmc1", PasswordSecret: &SecretKeyRef{Name: "bmc", Key: "password"}, Password: "x"}
		}, want: []string{"spec.power.password", "spec.power.password"}},

		// Secret.
		{name: "bad keys and type", kind: "Secret", edit: func(o Object) {
			s := &o.(*Secret).Spec
			s.Type = "not a type"
			s.StringData = map[string]string{"has space": "x"}
		}, want: []string{"spec.data", "spec.type"}, detail: `key "has space" is not a secret key`},
		{name: "too big", kind: "Secret", edit: func(o Object) {
			o.(*Secret).Spec.Data = map[string][]byte{"big": make([]byte, MaxSecretSize)}
		}, want: []string{"spec.data"}, detail: "more than the"},

		// MachineProfile.
		{name: "kernel and script", kind: "MachineProfile", edit: func(o Object) {
			o.(*MachineProfile).Spec.IPXEScript = "#!ipxe\nexit\n"
		}, want: []string{"spec.ipxeScript"}},
		{name: "nothing to boot", kind: "MachineProfile", edit: func(o Object) {
			o.(*MachineProfile).Spec.ProfileBoot = ProfileBoot{}
		}, want: []string{"spec.kernel"}},
		{name: "script with initrds and args", kind: "MachineProfile", edit: func(o Object) {
			s := &o.(*MachineProfile).Spec
			s.Kernel, s.IPXEScript = nil, "chain http://boot/menu.ipxe"
		}, want: []string{"spec.args", "spec.initrds"}},
		{name: "bad variants", kind: "MachineProfile", edit: func(o Object) {
			o.(*MachineProfile).Spec.Variants = map[string]ProfileBoot{
				"arm64": {Args: "console=ttyAMA0"},
				"ppc64": {IPXEScript: "exit"},
				"amd64": {IPXEScript: "exit"},
				"x86_64": {Kernel: &BootFile{URL: "http://boot/linux", Checksum: "md5:abc"},
					Initrds: []BootFile{{URL: "http://boot/a"}, {URL: "/srv/b"}}},
			}
		}, want: []string{"spec.variants.amd64", "spec.variants.arm64.kernel", "spec.variants.ppc64",
			"spec.variants.x86_64.initrds[1].url", "spec.variants.x86_64.kernel.checksum"}},
		{name: "image in a profile", kind: "MachineProfile", edit: func(o Object) {
			s := &o.(*MachineProfile).Spec
			s.Kernel = &BootFile{Image: "linux"}
		}, want: []string{"spec.kernel.image", "spec.kernel.url"}, detail: "is only for VirtualMachines"},
		{name: "bad urls and templates", kind: "MachineProfile", edit: func(o Object) {
			s := &o.(*MachineProfile).Spec
			s.Kernel.URL = "ftp://srv/linux"
			s.Initrds[0].Checksum = "sha256:ABC"
			s.Args = "console={{ .Console"
		}, want: []string{"spec.args", "spec.initrds[0].checksum", "spec.kernel.url"}, detail: `"ftp://srv/linux" is not an http or https URL`},
		{name: "bad files", kind: "MachineProfile", edit: func(o Object) {
			s := &o.(*MachineProfile).Spec
			s.Files = append(s.Files,
				ProfileFile{Name: "preseed.cfg", Template: "again"},
				ProfileFile{Name: "../etc/passwd", Template: "x"},
				ProfileFile{Name: "a..b", Template: "x"},
				ProfileFile{Name: "", Template: "{{ end }}", ContentType: "not a type"},
			)
		}, want: []string{"spec.files[1].name", "spec.files[2].name", "spec.files[3].name",
			"spec.files[4].contentType", "spec.files[4].name", "spec.files[4].template"}, detail: `"preseed.cfg" is already used by files[0]`},
		{name: "ssh keys without tenant", kind: "MachineProfile", edit: func(o Object) {
			s := &o.(*MachineProfile).Spec
			s.Tenant, s.SSHKeySelector = "", LabelSelector{"team": "ops"}
		}, want: []string{"spec.tenant"}},
		{name: "bad selector", kind: "MachineProfile", edit: func(o Object) {
			s := &o.(*MachineProfile).Spec
			s.Selector = MachineSelector{MACs: []string{"52:54:00:aa:bb"}, Architectures: []string{"mips"}, Sites: []string{"Home"}}
		}, want: []string{"spec.selector.architectures[0]", "spec.selector.macs[0]", "spec.selector.sites[0]"}},

		// Image.
		{name: "url and upload", kind: "Image", edit: func(o Object) { o.(*Image).Spec.Source.Upload = true },
			want: []string{"spec.source.upload"}},
		{name: "no source", kind: "Image", edit: func(o Object) { o.(*Image).Spec.Source = ImageSource{} },
			want: []string{"spec.source.url"}},
		{name: "bad format and checksum", kind: "Image", edit: func(o Object) {
			s := &o.(*Image).Spec
			s.Format, s.OSType, s.Source.Checksum = "vmdk", "plan9", "sha1:abc"
		}, want: []string{"spec.format", "spec.osType", "spec.source.checksum"}},
		{name: "new source", kind: "Image", update: true, edit: func(o Object) {
			o.(*Image).Spec.Source.URL = "https://example.org/other.qcow2"
		}, want: []string{"spec.source"}},

		// VirtualMachine.
		{name: "unknown datasource", kind: "VirtualMachine", edit: func(o Object) { o.(*VirtualMachine).Spec.CloudInit.Datasource = "azure" },
			want: []string{"spec.cloudInit.datasource"}, detail: `"azure" is not one of openstack`},
		{name: "user-data without a seed or a network", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.CloudInit.Disabled, s.NICs = true, nil
		}, want: []string{"spec.cloudInit.disabled"}, detail: "no NIC is on a network"},
		{name: "too small", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.Memory, s.CPUs = 32<<20, 300
		}, want: []string{"spec.cpus", "spec.memory"}, detail: "300 is out of range (1 to 256)"},
		{name: "odd memory", kind: "VirtualMachine", edit: func(o Object) { o.(*VirtualMachine).Spec.Memory = 100<<20 + 1 },
			want: []string{"spec.memory"}},
		{name: "bad enums", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.PowerState, s.RestartPolicy, s.Firmware, s.MachineType = "On", "Sometimes", "coreboot", "isapc"
		}, want: []string{"spec.firmware", "spec.machineType", "spec.powerState", "spec.restartPolicy"}},
		{name: "bad nics", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.NICs = []VMNIC{
				{Network: "net1", MAC: "52:54:00:12:34"},
				{Network: "net1", IP: "10.0.0.300", MAC: "01:00:5e:00:00:01"},
				{Network: "", SecurityGroups: []string{"Web"}, Model: "ne2k"},
				{Network: "net1", MAC: "52:54:00:AA:00:01"},
				{Network: "net1", MAC: "52:54:00:aa:00:01"},
			}
		}, want: []string{"spec.nics[0].mac", "spec.nics[1].ip", "spec.nics[1].mac", "spec.nics[2].model",
			"spec.nics[2].network", "spec.nics[2].securityGroups[0]", "spec.nics[4].mac"}},
		{name: "nics with Hearth's MACs", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.NICs = []VMNIC{{Network: "net1", MAC: "02:68:67:00:10:00"}, {Network: "net1", MAC: "06:68:0a:00:00:01"}, {Network: "net1", MAC: "00:00:00:00:00:00"}}
		}, want: []string{"spec.nics[0].mac", "spec.nics[1].mac", "spec.nics[2].mac"}},
		{name: "bad disks", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.Disks = []VMDisk{
				{Volume: "web-1-root", BootIndex: 1},
				{Volume: "web-1-root", BootIndex: 1},
				{Volume: "data", Image: "debian-12"},
				{Image: "installer", Device: "cdrom", Bus: "virtio", Size: 1 << 30},
				{Bus: "sata", BootIndex: -1},
			}
		}, want: []string{"spec.disks[1].bootIndex", "spec.disks[1].volume", "spec.disks[2].image",
			"spec.disks[3].bus", "spec.disks[3].size", "spec.disks[4].bootIndex", "spec.disks[4].bus", "spec.disks[4].volume"}},
		{name: "disks QEMU cannot make", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.Disks = []VMDisk{
				{Volume: "web-1-root"},
				{Volume: "tools", Bus: "ide", ReadOnly: true},
				{Volume: "data", Device: "cdrom", Bus: "scsi"},
			}
		}, want: []string{"spec.disks[1].readOnly", "spec.disks[2].image"}},
		{name: "kernel boot without kernel", kind: "VirtualMachine", edit: func(o Object) {
			o.(*VirtualMachine).Spec.Boot = VMBoot{From: BootFromKernel, Initrd: &BootFile{URL: "ftp://x/initrd"}}
		}, want: []string{"spec.boot.initrd.url", "spec.boot.kernel"}},
		// A VM never boots a file of its host, whoever writes it: a
		// shared Image stands for such a file.
		{name: "kernel from a host file", kind: "VirtualMachine", edit: func(o Object) {
			o.(*VirtualMachine).Spec.Boot = VMBoot{From: BootFromKernel, Kernel: &BootFile{URL: "file:///var/lib/hearth-agent/credentials.json"},
				Initrd: &BootFile{URL: "file:///etc/shadow"}}
		}, want: []string{"spec.boot.initrd.url", "spec.boot.kernel.url"}, detail: "cannot boot a file of its host"},
		{name: "kernel from a local path", kind: "VirtualMachine", edit: func(o Object) {
			o.(*VirtualMachine).Spec.Boot = VMBoot{From: BootFromKernel, Kernel: &BootFile{URL: "/etc/shadow"}}
		}, want: []string{"spec.boot.kernel.url"}, detail: "is not an http or https URL"},
		{name: "boot file from url and image", kind: "VirtualMachine", edit: func(o Object) {
			o.(*VirtualMachine).Spec.Boot = VMBoot{From: BootFromKernel, Kernel: &BootFile{URL: "https://boot/linux", Image: "linux"},
				Initrd: &BootFile{}}
		}, want: []string{"spec.boot.initrd.url", "spec.boot.kernel.image"}, detail: "not both"},
		{name: "boot image with a checksum", kind: "VirtualMachine", edit: func(o Object) {
			o.(*VirtualMachine).Spec.Boot = VMBoot{From: BootFromKernel, Kernel: &BootFile{Image: "Linux"},
				Initrd: &BootFile{Image: "initrd", Checksum: "sha256:" + strings.Repeat("a", 64)}}
		}, want: []string{"spec.boot.initrd.checksum", "spec.boot.kernel.image"}},
		{name: "disk boot with a kernel line and no disks", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.Disks, s.Boot = nil, VMBoot{Cmdline: "console=ttyS0"}
		}, want: []string{"spec.boot.cmdline", "spec.boot.from"}},
		{name: "bad cloud-init and placement", kind: "VirtualMachine", edit: func(o Object) {
			s := &o.(*VirtualMachine).Spec
			s.CloudInit.UserData = strings.Repeat("x", MaxCloudInitBytes+1)
			s.CloudInit.SSHKeys = []string{"Alice"}
			s.NodeSelector = LabelSelector{"zone": "a b"}
			s.AntiAffinity = []LabelSelector{{}}
			s.Host = "H1"
		}, want: []string{"spec.antiAffinity[0]", "spec.cloudInit.sshKeys[0]", "spec.cloudInit.userData", "spec.host", "spec.nodeSelector.zone"}},

		// VirtualMachineSet.
		{name: "bad replicas and template", kind: "VirtualMachineSet", edit: func(o Object) {
			s := &o.(*VirtualMachineSet).Spec
			n := -1
			s.Replicas = &n
			s.Template.Spec.Memory = 1 << 20
			s.Template.Spec.NICs[0].MAC = "nope"
		}, want: []string{"spec.replicas", "spec.template.spec.memory", "spec.template.spec.nics[0].mac"}},
		{name: "selector does not match", kind: "VirtualMachineSet", edit: func(o Object) {
			o.(*VirtualMachineSet).Spec.Selector = LabelSelector{"app": "web"}
		}, want: []string{"spec.template.metadata.labels"}, detail: "app=web"},
		{name: "no labels", kind: "VirtualMachineSet", edit: func(o Object) {
			o.(*VirtualMachineSet).Spec.Template.Metadata.Labels = nil
		}, want: []string{"spec.selector"}},
		{name: "controllers' mark on the template", kind: "VirtualMachineSet", edit: func(o Object) {
			o.(*VirtualMachineSet).Spec.Template.Metadata.Annotations = map[string]string{AnnotationOwnerDisk: "uid/0"}
		}, want: []string{"spec.template.metadata.annotations[" + AnnotationOwnerDisk + "]"}},
		{name: "shared volume", kind: "VirtualMachineSet", edit: func(o Object) {
			s := &o.(*VirtualMachineSet).Spec
			s.Template.Spec.Disks = []VMDisk{{Volume: "web-1-root"}, {Volume: "tools", ReadOnly: true}}
		}, want: []string{"spec.template.spec.disks[0].volume"}},
		{name: "selector change", kind: "VirtualMachineSet", update: true, edit: func(o Object) {
			s := &o.(*VirtualMachineSet).Spec
			s.Selector = LabelSelector{"app": "worker2"}
			s.Template.Metadata.Labels = map[string]string{"app": "worker2"}
		}, want: []string{"spec.selector"}},

		// Volume.
		{name: "empty without size", kind: "Volume", edit: func(o Object) { o.(*Volume).Spec = VolumeSpec{} },
			want: []string{"spec.size"}, detail: "is required for an empty volume"},
		{name: "two sources", kind: "Volume", edit: func(o Object) { o.(*Volume).Spec.Source.Snapshot = "snap" },
			want: []string{"spec.source.snapshot"}},
		{name: "rbd without a pool as qcow2", kind: "Volume", edit: func(o Object) {
			s := &o.(*Volume).Spec
			s.Backend, s.Format, s.Host = BackendRBD, FormatQCOW2, "h1"
		}, want: []string{"spec.format", "spec.pool"}},
		{name: "pool that is a path", kind: "Volume", edit: func(o Object) {
			s := &o.(*Volume).Spec
			s.Pool, s.Backend, s.Format = "../../etc", "", ""
		}, want: []string{"spec.pool"}},
		{name: "other pool", kind: "Volume", update: true, edit: func(o Object) { o.(*Volume).Spec.Pool = "ceph" },
			want: []string{"spec.pool"}, detail: "cannot change"},
		{name: "tiny and odd", kind: "Volume", edit: func(o Object) {
			s := &o.(*Volume).Spec
			s.Size, s.Backend, s.Format = 4096, "iscsi", "vdi"
		}, want: []string{"spec.backend", "spec.format", "spec.size"}},
		{name: "shrink", kind: "Volume", update: true, edit: func(o Object) { o.(*Volume).Spec.Size = 5 << 30 },
			want: []string{"spec.size"}, detail: "cannot shrink from 10Gi to 5Gi"},
		{name: "new source and backend", kind: "Volume", update: true, edit: func(o Object) {
			s := &o.(*Volume).Spec
			s.Source, s.Backend = VolumeSource{Image: "ubuntu-24"}, BackendNFS
		}, want: []string{"spec.backend", "spec.pool", "spec.source"}},

		// Snapshot.
		{name: "no volume", kind: "Snapshot", edit: func(o Object) { o.(*Snapshot).Spec.Volume = "" },
			want: []string{"spec.volume"}},
		{name: "other volume", kind: "Snapshot", update: true, edit: func(o Object) { o.(*Snapshot).Spec.Volume = "other" },
			want: []string{"spec.volume"}},

		// StoragePool.
		{name: "no driver", kind: "StoragePool", edit: func(o Object) { o.(*StoragePool).Spec.Driver = "" },
			want: []string{"spec.driver", "spec.rbd"}, detail: "is required: local, rbd or nfs"},
		{name: "bad rbd settings", kind: "StoragePool", edit: func(o Object) {
			o.(*StoragePool).Spec.RBD = &RBDPoolSpec{Monitors: []string{"mon1:99999", "a,b"}, Pool: "rbd\nkeyring = /etc/shadow",
				User: "client.hearth", KeyringSecret: &SecretKeyRef{Name: "Ceph"}}
		}, want: []string{"spec.rbd.keyringSecret.key", "spec.rbd.keyringSecret.name", "spec.rbd.monitors[0]", "spec.rbd.monitors[1]",
			"spec.rbd.pool", "spec.rbd.user"}, detail: "has no port from 1 to 65535"},
		{name: "rbd without settings", kind: "StoragePool", edit: func(o Object) { o.(*StoragePool).Spec.RBD = nil },
			want: []string{"spec.rbd"}, detail: "is required for driver rbd"},
		{name: "nfs settings on an rbd pool", kind: "StoragePool", edit: func(o Object) {
			o.(*StoragePool).Spec.NFS = &NFSPoolSpec{Server: "nas", Export: "/srv"}
		}, want: []string{"spec.nfs"}, detail: "give only the settings of the pool's driver"},
		{name: "bad nfs settings", kind: "StoragePool", edit: func(o Object) {
			s := &o.(*StoragePool).Spec
			s.Driver, s.RBD, s.NFS = PoolDriverNFS, nil, &NFSPoolSpec{Server: "2001:db8::1", Export: "/srv/../etc"}
		}, want: []string{"spec.nfs.export", "spec.nfs.server"}, detail: "is not a host name or IPv4 address"},
		{name: "local path", kind: "StoragePool", edit: func(o Object) {
			s := &o.(*StoragePool).Spec
			s.Driver, s.RBD, s.Local = PoolDriverLocal, nil, &LocalPoolSpec{Path: "volumes/"}
		}, want: []string{"spec.local.path"}},
		{name: "other ceph pool", kind: "StoragePool", update: true, edit: func(o Object) { o.(*StoragePool).Spec.RBD.Pool = "other" },
			want: []string{"spec.rbd.pool"}, detail: "cannot change"},
		{name: "other driver", kind: "StoragePool", update: true, edit: func(o Object) {
			s := &o.(*StoragePool).Spec
			s.Driver, s.RBD, s.NFS = PoolDriverNFS, nil, &NFSPoolSpec{Server: "nas", Export: "/srv"}
		}, want: []string{"spec.driver"}, detail: "cannot change"},

		// FloatingIP.
		{name: "bad fip", kind: "FloatingIP", edit: func(o Object) {
			s := &o.(*FloatingIP).Spec
			s.ExternalNetwork, s.Address, s.Target = "", "192.168.1.256", &FloatingIPTarget{NIC: -1}
		}, want: []string{"spec.address", "spec.externalNetwork", "spec.target.nic", "spec.target.vm"}},
		{name: "new address", kind: "FloatingIP", update: true, edit: func(o Object) { o.(*FloatingIP).Spec.Address = "192.168.1.201" },
			want: []string{"spec.address"}, detail: "status.address"},

		// SecurityGroup.
		{name: "bad rules", kind: "SecurityGroup", edit: func(o Object) {
			o.(*SecurityGroup).Spec.Rules = []SecurityGroupRule{
				{Ports: "70000"},
				{Protocol: ProtocolICMP, Ports: "8"},
				{Direction: "in", Protocol: "sctp"},
				{CIDR: "10.0.0.0/8", RemoteGroup: "web"},
				{CIDR: "10.0.0.0/33"},
				{Protocol: ProtocolUDP, Ports: "9000-8000"},
				{Ports: "ssh"},
				{RemoteGroup: "Web"},
			}
		}, want: []string{"spec.rules[0].ports", "spec.rules[1].ports", "spec.rules[2].direction", "spec.rules[2].protocol",
			"spec.rules[3].remoteGroup", "spec.rules[4].cidr", "spec.rules[5].ports", "spec.rules[6].ports", "spec.rules[7].remoteGroup"},
			detail: "70000 is not a port (1 to 65535)"},

		// SSHKey.
		{name: "no key", kind: "SSHKey", edit: func(o Object) { o.(*SSHKey).Spec.PublicKey = "" },
			want: []string{"spec.publicKey"}, detail: "is required"},
		{name: "private key", kind: "SSHKey", edit: func(o Object) {
			o.(*SSHKey).Spec.PublicKey = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
		}, want: []string{"spec.publicKey"}, detail: "is a private key"},
		{name: "type mismatch", kind: "SSHKey", edit: func(o Object) { o.(*SSHKey).Spec.PublicKey = "ssh-rsa " + ed25519Blob + " alice" },
			want: []string{"spec.publicKey"}, detail: "says ssh-rsa but its key data is for ssh-ed25519"},
		{name: "not base64", kind: "SSHKey", edit: func(o Object) { o.(*SSHKey).Spec.PublicKey = "ssh-ed25519 not*base64" },
			want: []string{"spec.publicKey"}, detail: "not base64"},
		{name: "cut short", kind: "SSHKey", edit: func(o Object) { o.(*SSHKey).Spec.PublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1" },
			want: []string{"spec.publicKey"}, detail: "cut short"},
		{name: "dsa", kind: "SSHKey", edit: func(o Object) { o.(*SSHKey).Spec.PublicKey = "ssh-dss AAAAB3NzaC1kc3M= old" },
			want: []string{"spec.publicKey"}, detail: `key type "ssh-dss"`},
		{name: "two keys", kind: "SSHKey", edit: func(o Object) {
			k := &o.(*SSHKey).Spec
			k.PublicKey = k.PublicKey + "\n" + k.PublicKey
		}, want: []string{"spec.publicKey"}, detail: "more than one line"},
		{name: "only a type", kind: "SSHKey", edit: func(o Object) { o.(*SSHKey).Spec.PublicKey = "ssh-ed25519" },
			want: []string{"spec.publicKey"}},
	}

	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.kind] = true
		t.Run(c.kind+"/"+c.name, func(t *testing.T) {
			obj := example(t, c.kind)
			var old Object
			if c.update {
				old = roundTrip(t, obj)
				if es := Prepare(old, nil); len(es) > 0 {
					t.Fatalf("old object is invalid: %v", es)
				}
				obj = DeepCopy(old)
				if c.kind == "VirtualMachine" {
					// Updates of a VM happen after it is placed.
					old.(*VirtualMachine).Spec.Host = "h1"
					obj.(*VirtualMachine).Spec.Host = "h1"
				}
			}
			c.edit(obj)
			obj = roundTrip(t, obj)
			es := Prepare(obj, old)
			if got := fields(es); !slices.Equal(got, c.want) {
				t.Fatalf("errors at %v, want %v\n%v", got, c.want, es)
			}
			if c.detail != "" && !strings.Contains(es[0].Detail, c.detail) {
				t.Errorf("first error %q does not say %q", es[0].Error(), c.detail)
			}
			for _, e := range es {
				if e.Detail == "" {
					t.Errorf("error at %s has no detail", e.Field)
				}
			}
		})
	}
	for _, k := range Kinds() {
		if !covered[k.Kind] {
			t.Errorf("no invalid cases for %s", k.Kind)
		}
	}
}

func TestValidUpdates(t *testing.T) {
	for _, c := range []struct {
		kind string
		edit func(old, o Object)
	}{
		{"VirtualMachine", func(old, o Object) { o.(*VirtualMachine).Spec.Host = "h1" }}, // scheduling
		{"Volume", func(old, o Object) { o.(*Volume).Spec.Size = 20 << 30 }},             // growing
		{"Volume", func(old, o Object) { o.(*Volume).Spec.Host = "h1" }},
		{"Snapshot", func(old, o Object) { o.(*Snapshot).Spec.Host = "h1" }},
		{"FloatingIP", func(old, o Object) { o.(*FloatingIP).Spec.Target = nil }},
		{"VirtualMachineSet", func(old, o Object) { n := 5; o.(*VirtualMachineSet).Spec.Replicas = &n }},
		{"Machine", func(old, o Object) { o.(*Machine).Spec.MAC = "52:54:00:AA:BB:01" }}, // same MAC, other case
		{"VirtualMachine", func(old, o Object) { // a kernel and initrd from Images, or an http URL
			o.(*VirtualMachine).Spec.Boot = VMBoot{From: BootFromKernel, Kernel: &BootFile{Image: "testguest-kernel"},
				Initrd: &BootFile{URL: "https://boot.lab.example/initrd.img", Checksum: "sha256:" + strings.Repeat("0", 64)}}
		}},
		{"Machine", func(old, o Object) {
			// A password stored before Secrets existed stays while other
			// things change, and may be swapped for a Secret.
			inline := MachinePower{Driver: PowerDriverIPMI, Address: "bmc1", Password: "s3cret"}
			old.(*Machine).Spec.Power, o.(*Machine).Spec.Power = inline, inline
			o.(*Machine).Spec.Approved = false
		}},
		{"Machine", func(old, o Object) {
			old.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverIPMI, Address: "bmc1", Password: "s3cret"}
			o.(*Machine).Spec.Power = MachinePower{Driver: PowerDriverIPMI, Address: "bmc1", PasswordSecret: &SecretKeyRef{Name: "node1-bmc", Key: "password"}}
		}},
		{"Secret", func(old, o Object) { o.(*Secret).Spec.StringData = map[string]string{"password": "new"} }},
	} {
		old := roundTrip(t, example(t, c.kind))
		if es := Prepare(old, nil); len(es) > 0 {
			t.Fatalf("%s: %v", c.kind, es)
		}
		obj := DeepCopy(old)
		c.edit(old, obj)
		if es := Prepare(obj, old); len(es) > 0 {
			t.Errorf("%s: update rejected: %v", c.kind, es)
		}
	}
}

func TestDefaults(t *testing.T) {
	vm := roundTrip(t, example(t, "VirtualMachine")).(*VirtualMachine)
	vm.Spec.NICs[0].MAC = "52:54:00:AB:CD:EF"
	if es := Prepare(vm, nil); len(es) > 0 {
		t.Fatal(es)
	}
	s := vm.Spec
	if s.Memory != 1<<30 || s.PowerState != PowerRunning || s.RestartPolicy != RestartAlways || s.Boot.From != BootFromDisk ||
		s.Firmware != FirmwareBIOS || s.Disks[0].Bus != "virtio" || s.NICs[0].Model != "virtio" || s.NICs[0].MAC != "52:54:00:ab:cd:ef" {
		t.Errorf("VM defaults: %+v", s)
	}

	set := roundTrip(t, example(t, "VirtualMachineSet")).(*VirtualMachineSet)
	set.Spec.Replicas = nil
	if es := Prepare(set, nil); len(es) > 0 {
		t.Fatal(es)
	}
	if set.Spec.DesiredReplicas() != 1 || set.Spec.Selector.String() != "app=worker" || set.Spec.Template.Spec.Memory != 512<<20 {
		t.Errorf("set defaults: replicas %d, selector %s, memory %s", set.Spec.DesiredReplicas(), set.Spec.Selector, set.Spec.Template.Spec.Memory)
	}

	m := &Machine{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Machine"}, Metadata: ObjectMeta{Name: "m"},
		Spec: MachineSpec{MAC: " 52:54:00:AA:BB:CC ", Architecture: "aarch64", Power: MachinePower{Driver: PowerDriverWOL}}}
	if es := Prepare(m, nil); len(es) > 0 {
		t.Fatal(es)
	}
	if m.Spec.MAC != "52:54:00:aa:bb:cc" || m.Spec.Architecture != ArchARM64 || m.Spec.Power.WOL == nil || m.Spec.Power.WOL.Port != 9 {
		t.Errorf("machine defaults: %+v %+v", m.Spec, m.Spec.Power.WOL)
	}

	vol := &Volume{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Volume"}, Metadata: ObjectMeta{Name: "v", Tenant: testTenant},
		Spec: VolumeSpec{Size: 1 << 30, Backend: BackendRBD, Pool: "ceph"}}
	if es := Prepare(vol, nil); len(es) > 0 || vol.Spec.Format != FormatRaw {
		t.Errorf("rbd volume: format %q, %v", vol.Spec.Format, es)
	}

	sg := roundTrip(t, example(t, "SecurityGroup")).(*SecurityGroup)
	if es := Prepare(sg, nil); len(es) > 0 {
		t.Fatal(es)
	}
	if r := sg.Spec.Rules[0]; r.Direction != Ingress || r.Protocol != ProtocolTCP {
		t.Errorf("rule with ports: %+v", r)
	}
	if r := sg.Spec.Rules[2]; r.Protocol != ProtocolICMP {
		t.Errorf("icmp rule: %+v", r)
	}

	site := roundTrip(t, example(t, "Site")).(*Site)
	if es := Prepare(site, nil); len(es) > 0 || site.Spec.Overlay.ListenPort != DefaultOverlayPort || site.Spec.Overlay.MTU != 1420 {
		t.Errorf("site overlay defaults: %+v %v", site.Spec.Overlay, es)
	}

	mp := roundTrip(t, example(t, "MachineProfile")).(*MachineProfile)
	mp.Spec.Variants = map[string]ProfileBoot{"amd64": {IPXEScript: "exit"}}
	if es := Prepare(mp, nil); len(es) > 0 {
		t.Fatal(es)
	}
	if _, ok := mp.Spec.Variants[ArchX86_64]; !ok || mp.Spec.Files[0].ContentType == "" {
		t.Errorf("profile defaults: variants %v, files %+v", mp.Spec.Variants, mp.Spec.Files)
	}
}

func TestMachineProfileMatching(t *testing.T) {
	m := Examples()["Machine"].(*Machine)
	p := Examples()["MachineProfile"].(*MachineProfile)
	if !p.Spec.Selector.Matches(m) {
		t.Error("profile selector should match the example machine by label")
	}
	for _, sel := range []MachineSelector{
		{Labels: LabelSelector{"role": "compute"}},
		{MACs: []string{"52:54:00:00:00:00"}},
		{Architectures: []string{ArchARM64}},
		{Sites: []string{"colo"}},
	} {
		if sel.Matches(m) {
			t.Errorf("%s should not match", sel)
		}
	}
	if !(MachineSelector{}).Matches(m) {
		t.Error("an empty selector matches every machine")
	}

	p.Spec.Variants = map[string]ProfileBoot{ArchARM64: {IPXEScript: "exit"}}
	if b, ok := p.Spec.BootFor("aarch64"); !ok || b.IPXEScript != "exit" {
		t.Errorf("BootFor(aarch64) = %+v, %v", b, ok)
	}
	if b, ok := p.Spec.BootFor(ArchX86_64); !ok || b.Kernel == nil {
		t.Errorf("BootFor(x86_64) = %+v, %v", b, ok)
	}
	p.Spec.ProfileBoot = ProfileBoot{}
	if _, ok := p.Spec.BootFor(ArchX86_64); ok {
		t.Error("BootFor(x86_64) without a default or variant should fail")
	}
}

func TestBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Bytes
		str  string
	}{
		{"512Mi", 512 << 20, "512Mi"},
		{"4Gi", 4 << 30, "4Gi"},
		{"1.5Gi", 3 << 29, "1536Mi"},
		{"1048576", 1 << 20, "1Mi"},
		{"1G", 1e9, "1000000000"},
		{"2k", 2000, "2000"},
		{" 1Ti ", 1 << 40, "1Ti"},
		{"0", 0, "0"},
		{"1000", 1000, "1000"},
	} {
		got, err := ParseBytes(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", c.in, got, err, c.want)
			continue
		}
		if got.String() != c.str {
			t.Errorf("%d.String() = %q, want %q", got, got.String(), c.str)
		}
		back, err := ParseBytes(got.String())
		if err != nil || back != got {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d back", got.String(), back, err, got)
		}
	}
	for _, bad := range []string{"", "-1Gi", "lots", "1.5.5G", "Gi", "99999999999Ei"} {
		if b, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", bad, b)
		}
	}

	var v struct {
		A Bytes `json:"a"`
		B Bytes `json:"b"`
	}
	if err := json.Unmarshal([]byte(`{"a":"2Gi","b":1024}`), &v); err != nil || v.A != 2<<30 || v.B != 1<<10 {
		t.Fatalf("unmarshal: %+v, %v", v, err)
	}
	out, _ := json.Marshal(v)
	if string(out) != `{"a":"2Gi","b":"1Ki"}` {
		t.Errorf("marshal: %s", out)
	}
	if err := json.Unmarshal([]byte(`{"a":true}`), &v); err == nil {
		t.Error("a boolean size should not decode")
	}
	if Bytes(1).GiB() != 1 || Bytes(2<<30).GiB() != 2 {
		t.Error("GiB should round up")
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		field     string
		detail    string
	}{
		{"misspelt field", `{"apiVersion":"hearth.dev/v1alpha1","kind":"Subnet","metadata":{"name":"a"},"spec":{"network":"n","cdir":"10.0.0.0/24"}}`,
			"spec.cdir", `unknown field (did you mean "cidr"?)`},
		{"misspelt in a list", `{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine","metadata":{"name":"a"},"spec":{"nics":[{"network":"n"},{"network":"n","securityGroup":["web"]}]}}`,
			"spec.nics[1].securityGroup", `did you mean "securityGroups"?`},
		{"misspelt inline field", `{"apiVersion":"hearth.dev/v1alpha1","kind":"MachineProfile","metadata":{"name":"a"},"spec":{"kernal":{"url":"http://x/linux"}}}`,
			"spec.kernal", `did you mean "kernel"?`},
		{"misspelt in a map", `{"apiVersion":"hearth.dev/v1alpha1","kind":"MachineProfile","metadata":{"name":"a"},"spec":{"variants":{"arm64":{"ipxescript":"exit"}}}}`,
			"spec.variants.arm64.ipxescript", `did you mean "ipxeScript"?`},
		{"nothing close", `{"apiVersion":"hearth.dev/v1alpha1","kind":"Volume","metadata":{"name":"a"},"spec":{"flavour":"big"}}`,
			"spec.flavour", "unknown field"},
		{"wrong type", `{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine","metadata":{"name":"a"},"spec":{"cpus":"two"}}`,
			"spec.cpus", "string is not an integer"},
		{"bad size", `{"apiVersion":"hearth.dev/v1alpha1","kind":"Volume","metadata":{"name":"a"},"spec":{"size":"big"}}`,
			"spec.size", `"big" is not a size`},
		{"bad size in a list", `{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine","metadata":{"name":"a"},"spec":{"disks":[{"image":"i"},{"image":"i","size":-5}]}}`,
			"spec.disks[1].size", "size -5 is negative"},
		{"bad time", `{"apiVersion":"hearth.dev/v1alpha1","kind":"Machine","metadata":{"name":"a"},"spec":{"mac":"52:54:00:00:00:01","reinstallRequested":"yesterday"}}`,
			"spec.reinstallRequested", "cannot parse"},
		{"unknown kind", `{"apiVersion":"hearth.dev/v1alpha1","kind":"Pod","metadata":{"name":"a"}}`,
			"kind", `"Pod" is not a Hearth kind`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode([]byte(c.doc))
			es, ok := err.(FieldErrors)
			if !ok || len(es) == 0 {
				t.Fatalf("Decode error %v (%T), want FieldErrors", err, err)
			}
			if es[0].Field != c.field || !strings.Contains(es[0].Detail, c.detail) {
				t.Errorf("got %q: %q, want %q: …%s…", es[0].Field, es[0].Detail, c.field, c.detail)
			}
		})
	}
}

func TestSSHFingerprint(t *testing.T) {
	// Fingerprints as `ssh-keygen -lf` prints them.
	for _, c := range []struct{ key, fp, comment string }{
		{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIcCK0mzKXM8xFOUST82s2fipGzyqvJ2kSYsHaThbzek alice@laptop",
			"SHA256:UwEoDgs9KMff3KgYelTxciI5GqMOjV59Bv4vERfQe20", "alice@laptop"},
		{"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFLeGTePYSGOZtU7K55+QhlOooz2kIHDmyK7ywM0cVVrRb1/RqcWLKDEOi3+quOGI05T4hV0j9M2QyBU7X14Ezk= bob at home",
			"SHA256:r7R3IApmGyhUSA+MzOv6+YTY5cTkHPH1YqPJuXXCE4o", "bob at home"},
		{"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCqNOeBoJkMpG0Syvt16T/qgOmjMK6MVMZMZuOI1maoxv5rJDvj4iiHdKfmefjzEYa2XkTpWyWN76GtOO4IO9Y6Ilmn4viIalyaaAu3i7+v535cV2y4dPh21n+xyWnRiU011Y615HsfeTHIALArCXyAFLmbi2A8Ndzqz8WoulMQmrqRXJhHh70fhqxgqJOshQitIi4pMdA2ZSq4hB9cy7OqRrCSz3yUFVYS+ZdEUoMkuAL/6rrbIGtipVt4oF18z6w6IXE8jVVSRbX8uogfYpgjcwXTA3axRJTAkXup/jBmyKNxClkgUB8uudZAECOau2Gv98Xf9XCPwMOUXPwuphfP\n",
			"SHA256:gpkr1P2YQprRbMdEca6UYKRwG3MB2CjCPUiAKDKJR4A", ""},
	} {
		fp, err := SSHFingerprint(c.key)
		if err != nil || fp != c.fp {
			t.Errorf("SSHFingerprint(%.30s…) = %q, %v; want %q", c.key, fp, err, c.fp)
		}
		if _, _, comment, _ := ParseSSHPublicKey(c.key); comment != c.comment {
			t.Errorf("comment %q, want %q", comment, c.comment)
		}
	}
	if _, err := SSHFingerprint("ssh-ed25519 AAAA"); err == nil {
		t.Error("a cut-short key has no fingerprint")
	}
}

func TestPortRange(t *testing.T) {
	for _, c := range []struct {
		in     string
		lo, hi int
		ok     bool
	}{
		{"22", 22, 22, true}, {"8000-9000", 8000, 9000, true}, {"1-65535", 1, 65535, true},
		{"0", 0, 0, false}, {"9000-8000", 0, 0, false}, {"22-", 0, 0, false}, {"a-b", 0, 0, false}, {"", 0, 0, false},
	} {
		lo, hi, err := ParsePortRange(c.in)
		if (err == nil) != c.ok || lo != c.lo || hi != c.hi {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v", c.in, lo, hi, err)
		}
	}
}

func TestDefaultStatusOnMatch(t *testing.T) {
	re := regexp.MustCompile(DefaultStatusOnMatch)
	for _, on := range []string{`{"ison":true}`, `{"id":0, "output": true}`, `{"POWER":"ON"}`, `{"state":"on","attributes":{}}`, "on\n", `"ON"`} {
		if !re.MatchString(on) {
			t.Errorf("%s should read as on", on)
		}
	}
	for _, off := range []string{`{"ison":false}`, `{"id":0,"output":false}`, `{"POWER":"OFF"}`, `{"state":"off"}`, "off", `{"online":true,"ison":false}`} {
		if re.MatchString(off) {
			t.Errorf("%s should read as off", off)
		}
	}
}

func TestValidateHelpers(t *testing.T) {
	if es := ValidateTemplate("spec.args", "a\n{{ .B "); len(es) != 1 || es[0].Detail != "is not a valid template: line 2: unclosed action" {
		t.Errorf("template error: %v", es)
	}
	if es := ValidateTemplate("spec.args", `{{ join .Keys "," | quote }}`); len(es) > 0 {
		t.Errorf("unknown functions are the renderer's business: %v", es)
	}
	for _, ok := range []string{"node1", "node1.lab.example", "a-b.c"} {
		if es := ValidateHostname("h", ok); len(es) > 0 {
			t.Errorf("%s: %v", ok, es)
		}
	}
	for _, bad := range []string{"", "-a", "a..b", "Node1", "a_b", strings.Repeat("a", 64) + ".b"} {
		if es := ValidateHostname("h", bad); len(es) == 0 {
			t.Errorf("%q should not be a host name", bad)
		}
	}
	for _, bad := range []string{"", "example.com/x", "ftp://x", "http://", "http//x"} {
		if es := ValidateURL("u", bad); len(es) == 0 {
			t.Errorf("%q should not be a URL", bad)
		}
	}
}

// TestFetchAddrRefusal: the addresses no download of Hearth's may reach
// (the fetching machine itself, link-local and metadata), and some a lab
// serves images from.
func TestFetchAddrRefusal(t *testing.T) {
	for _, c := range []struct {
		addr string
		want string // part of the reason; "" for allowed
	}{
		{"127.0.0.1", "loopback"},
		{"127.1.2.3", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"169.254.169.254", "metadata"},
		{"::ffff:169.254.169.254", "metadata"},
		{"169.254.10.1", "link-local"},
		{"fe80::1", "link-local"},
		{"192.168.1.10", ""},
		{"10.0.0.1", ""},
		{"172.31.255.1", ""},
		{"2001:db8::1", ""},
		{"151.101.2.132", ""},
	} {
		got := FetchAddrRefusal(netip.MustParseAddr(c.addr))
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("FetchAddrRefusal(%s) = %q, want %q", c.addr, got, c.want)
		}
	}
}

// Only the tenant a prefix is delegated to has its subnets in it routed,
// and only subnets wholly inside it.
func TestExternalIPv6Routes(t *testing.T) {
	x := &ExternalIPv6{CIDR: "2001:db8:ff::/64", Prefixes: []DelegatedPrefix{
		{Prefix: "2001:db8:100::/56", Tenant: "red"},
		{Prefix: "2001:db8:200::/64", Tenant: "blue"},
	}}
	for _, tc := range []struct {
		tenant, cidr string
		want         bool
	}{
		{"red", "2001:db8:100:1::/64", true},
		{"red", "2001:db8:100::/56", true},
		{"red", "2001:db8:100::/48", false}, // wider than the delegation
		{"blue", "2001:db8:100:1::/64", false},
		{"red", "2001:db8:200::/64", false},
		{"blue", "2001:db8:200::/64", true},
		{"red", "10.0.0.0/24", false},
	} {
		if got := x.Routes(tc.tenant, netip.MustParsePrefix(tc.cidr)); got != tc.want {
			t.Errorf("Routes(%s, %s) = %v, want %v", tc.tenant, tc.cidr, got, tc.want)
		}
	}
	var none *ExternalIPv6
	if none.Routes("red", netip.MustParsePrefix("2001:db8:100:1::/64")) {
		t.Error("a network without an IPv6 side routes IPv6")
	}
	s := ExternalNetworkSpec{CIDR: "192.0.2.0/24", IPv6: &ExternalIPv6{CIDR: "2001:db8:ff::/64"}}
	s.Default()
	if s.IPv6.Gateway != "2001:db8:ff::1" {
		t.Errorf("default IPv6 gateway %q, want 2001:db8:ff::1", s.IPv6.Gateway)
	}
}

// Without a seed disk, a VM on a network still gets its user-data, SSH
// keys and network config from the network's metadata service: allowed.
func TestCloudInitDisabledOnANetwork(t *testing.T) {
	vm := example(t, "VirtualMachine").(*VirtualMachine)
	vm.Spec.CloudInit.Disabled = true
	vm.Spec.Default()
	if es := vm.Spec.Validate("spec"); len(es) > 0 {
		t.Errorf("cloudInit.disabled with userData on a network: %v", es)
	}
}
