package v1alpha1

// Examples returns one small, valid object of every kind, keyed by kind.
// Together they describe one coherent lab (a tenant "lab" with a network,
// a VM and its disk, a site "home" with a host and a bare-metal machine),
// so a test can create them all and references resolve. Tenant-scoped
// objects leave metadata.tenant empty for the caller to set. Each call
// returns new objects the caller may change.
func Examples() map[string]Object {
	meta := func(name string) ObjectMeta { return ObjectMeta{Name: name} }
	tm := func(kind string) TypeMeta { return TypeMeta{APIVersion: APIVersion, Kind: kind} }
	two := 2
	return map[string]Object{
		"Tenant": &Tenant{TypeMeta: tm("Tenant"), Metadata: meta("lab"),
			Spec: TenantSpec{DisplayName: "Home lab", Quota: Quota{VCPUs: 16, Memory: 32 << 30}}},
		"User": &User{TypeMeta: tm("User"), Metadata: meta("auditor"),
			Spec: UserSpec{Role: RoleViewer, FullName: "Audit Bot"}},
		"Site": &Site{TypeMeta: tm("Site"), Metadata: meta("home"),
			Spec: SiteSpec{Description: "The rack in the garage", Tags: []string{"home"},
				Overlay: &SiteOverlay{CIDR: "10.255.1.0/24"}}},
		"Host": &Host{TypeMeta: tm("Host"), Metadata: meta("h1"),
			Spec: HostSpec{Site: "home", Address: "192.168.1.10"}},
		"ExternalNetwork": &ExternalNetwork{TypeMeta: tm("ExternalNetwork"), Metadata: meta("lan"),
			Spec: ExternalNetworkSpec{Site: "home", CIDR: "192.168.1.0/24", Gateway: "192.168.1.1",
				RangeStart: "192.168.1.200", RangeEnd: "192.168.1.250"}},
		"Network": &Network{TypeMeta: tm("Network"), Metadata: meta("net1"),
			Spec: NetworkSpec{ExternalNetwork: "lan"}},
		"Subnet": &Subnet{TypeMeta: tm("Subnet"), Metadata: meta("net1-a"),
			Spec: SubnetSpec{Network: "net1", CIDR: "10.0.0.0/24"}},
		"SecurityGroup": &SecurityGroup{TypeMeta: tm("SecurityGroup"), Metadata: meta("web"),
			Spec: SecurityGroupSpec{Description: "SSH and HTTP from anywhere", Rules: []SecurityGroupRule{
				{Ports: "22"},
				{Protocol: ProtocolTCP, Ports: "80", CIDR: "0.0.0.0/0"},
				{Protocol: ProtocolICMP},
			}}},
		"SSHKey": &SSHKey{TypeMeta: tm("SSHKey"), Metadata: meta("alice"),
			Spec: SSHKeySpec{PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIcCK0mzKXM8xFOUST82s2fipGzyqvJ2kSYsHaThbzek alice@laptop"}},
		"Image": &Image{TypeMeta: tm("Image"), Metadata: meta("debian-12"),
			Spec: ImageSpec{Description: "Debian 12 generic cloud image",
				Source: ImageSource{URL: "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"}}},
		"Volume": &Volume{TypeMeta: tm("Volume"), Metadata: meta("web-1-root"),
			Spec: VolumeSpec{Size: 10 << 30, Source: VolumeSource{Image: "debian-12"}}},
		"Snapshot": &Snapshot{TypeMeta: tm("Snapshot"), Metadata: meta("web-1-root-before-upgrade"),
			Spec: SnapshotSpec{Volume: "web-1-root"}},
		"VirtualMachine": &VirtualMachine{TypeMeta: tm("VirtualMachine"), Metadata: meta("web-1"),
			Spec: VirtualMachineSpec{CPUs: 2, Memory: 1 << 30,
				Disks:     []VMDisk{{Volume: "web-1-root", BootIndex: 1}},
				NICs:      []VMNIC{{Network: "net1", Subnet: "net1-a", SecurityGroups: []string{"web"}}},
				CloudInit: CloudInit{UserData: "#cloud-config\npackages: [nginx]\n", SSHKeys: []string{"alice"}}}},
		"VirtualMachineSet": &VirtualMachineSet{TypeMeta: tm("VirtualMachineSet"), Metadata: meta("workers"),
			Spec: VirtualMachineSetSpec{Replicas: &two, Template: VMTemplate{
				Metadata: TemplateMeta{Labels: map[string]string{"app": "worker"}},
				Spec: VirtualMachineSpec{
					Disks:        []VMDisk{{Image: "debian-12", Size: 10 << 30}},
					NICs:         []VMNIC{{Network: "net1"}},
					AntiAffinity: []LabelSelector{{"app": "worker"}},
				}}}},
		"FloatingIP": &FloatingIP{TypeMeta: tm("FloatingIP"), Metadata: meta("web"),
			Spec: FloatingIPSpec{ExternalNetwork: "lan", Target: &FloatingIPTarget{VM: "web-1"}}},
		"Machine": &Machine{TypeMeta: tm("Machine"), Metadata: ObjectMeta{Name: "node1", Labels: map[string]string{"role": "storage"}},
			Spec: MachineSpec{MAC: "52:54:00:aa:bb:01", Architecture: ArchX86_64, Site: "home", Approved: true,
				Power: MachinePower{Driver: PowerDriverWOL}}},
		"MachineProfile": &MachineProfile{TypeMeta: tm("MachineProfile"), Metadata: meta("debian-install"),
			Spec: MachineProfileSpec{Description: "Debian 12, installed by preseed",
				Selector: MachineSelector{Labels: LabelSelector{"role": "storage"}},
				Install:  true,
				ProfileBoot: ProfileBoot{
					Kernel:  &BootFile{URL: "https://deb.debian.org/debian/dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64/linux"},
					Initrds: []BootFile{{URL: "https://deb.debian.org/debian/dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64/initrd.gz"}},
					Args:    `auto=true priority=critical url={{ .FilesURL }}/preseed.cfg hostname={{ .Hostname }}`,
				},
				Files: []ProfileFile{{Name: "preseed.cfg",
					Template: "d-i passwd/root-login boolean false\n{{ range .SSHKeys }}# key {{ . }}\n{{ end }}"}},
				Tenant: "lab",
			}},
		"Secret": &Secret{TypeMeta: tm("Secret"), Metadata: meta("node1-bmc"),
			Spec: SecretSpec{Type: SecretOpaque, Data: map[string][]byte{"password": []byte("correct horse battery staple")}}},
		"StoragePool": &StoragePool{TypeMeta: tm("StoragePool"), Metadata: meta("ceph"),
			Spec: StoragePoolSpec{Driver: PoolDriverRBD, RBD: &RBDPoolSpec{Monitors: []string{"192.168.1.21", "192.168.1.22:3300"},
				Pool: "hearth", User: "hearth", KeyringSecret: &SecretKeyRef{Name: "ceph-hearth", Key: "key"}}}},
		"Event": &Event{TypeMeta: tm("Event"), Metadata: meta("h1-ready"),
			Spec: EventSpec{InvolvedObject: ObjectReference{Kind: "Host", Name: "h1"}, Reason: "Ready",
				Message: "host h1 is ready", Source: "controller/host-liveness"}},
	}
}
