package compute

import (
	"slices"
	"strings"
	"testing"
)

// argAfter returns every value that follows flag on the command line.
func argsAfter(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	q := NewQEMU(QEMUOptions{OVMFCode: "/fw/code.fd"})
	base := Spec{
		ID: "6F9619FF-8B86-D011-B42D-00C04FC964FF", Name: "lab/web,1", Dir: dir,
		CPUs: 2, MemoryMiB: 512, Firmware: "bios",
		Boot: Boot{From: "disk"},
	}
	tests := []struct {
		name  string
		edit  func(*Spec)
		flag  string
		want  []string // values of flag, in order
		wantS []string // substrings that must appear in the joined command line
	}{
		{
			name: "identity",
			flag: "-uuid", want: []string{"6f9619ff-8b86-d011-b42d-00c04fc964ff"},
			wantS: []string{"-name guest=lab/web,,1,process=hearth-6f9619ff,"},
		},
		{
			name: "smbios", edit: func(s *Spec) {
				s.SMBIOS = &SMBIOSSystem{Manufacturer: "OpenStack Foundation", Product: "OpenStack Nova, v1"}
			},
			flag: "-smbios", want: []string{"type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,, v1"},
		},
		{
			name: "no smbios",
			flag: "-smbios", want: nil,
		},
		{
			name: "tcg",
			flag: "-accel", want: []string{"tcg,thread=multi"},
			wantS: []string{"-cpu max", "-smp 2", "-m 512M", "-machine q35,graphics=off", "-S", "-nodefaults"},
		},
		{
			name: "kvm", edit: func(s *Spec) { s.KVM = true },
			flag: "-accel", want: []string{"kvm"},
			wantS: []string{"-cpu host"},
		},
		{
			name: "sockets",
			flag: "-chardev",
			want: []string{
				"socket,id=qmp,server=on,wait=off,path=" + dir + "/qmp.sock",
				"socket,id=ser0,server=on,wait=off,path=" + dir + "/console.sock,logfile=" + dir + "/console.log,logappend=on",
			},
			wantS: []string{"-serial chardev:ser0", "-mon chardev=qmp,mode=control", "-pidfile " + dir + "/qemu.pid"},
		},
		{
			name: "disks and seed",
			edit: func(s *Spec) {
				s.Disks = []Disk{{Path: "/v/root,a.qcow2", Format: "qcow2"}, {Path: "/v/data.raw", Format: "raw", ReadOnly: true, BootIndex: 3}}
				s.Seed = "/v/seed.iso"
			},
			flag: "-blockdev",
			want: []string{
				"driver=qcow2,node-name=disk0,file.driver=file,file.filename=/v/root,,a.qcow2,discard=unmap",
				"driver=raw,node-name=disk1,file.driver=file,file.filename=/v/data.raw,read-only=on",
				"driver=raw,node-name=seed,read-only=on,file.driver=file,file.filename=/v/seed.iso",
			},
			wantS: []string{
				"virtio-blk-pci,id=disk0-dev,drive=disk0 ",
				"virtio-blk-pci,id=disk1-dev,drive=disk1,bootindex=3",
				"virtio-blk-pci,id=seed-dev,drive=seed",
			},
		},
		{
			// A guest power-off and a guest panic keep the process, in
			// two statuses the agent tells apart (GuestStopped).
			name: "power-off is not a crash",
			flag: "-action", want: []string{"shutdown=pause,panic=pause"},
			wantS: []string{"-device pvpanic "},
		},
		{
			name: "shared storage",
			edit: func(s *Spec) {
				rbd := map[string]any{"driver": "rbd", "pool": "vms", "image": "hearth-vol-a", "user": "hearth", "key-secret": "pool-key"}
				s.Disks = []Disk{
					{Format: "raw", Protocol: rbd, Secrets: []Secret{{ID: "pool-key", File: "/p/key"}}},
					{Format: "raw", Protocol: rbd, Secrets: []Secret{{ID: "pool-key", File: "/p/key"}}, ReadOnly: true},
				}
			},
			flag: "-object",
			// One secret object for both disks; the key itself is nowhere.
			want: []string{"rng-random,id=rng0,filename=/dev/urandom", "secret,id=pool-key,format=base64,file=/p/key"},
			wantS: []string{
				`{"discard":"unmap","driver":"raw","file":{"driver":"rbd","image":"hearth-vol-a","key-secret":"pool-key","pool":"vms","user":"hearth"},"node-name":"disk0"}`,
				`"node-name":"disk1","read-only":true}`,
			},
		},
		{
			name:  "first disk boots by default",
			edit:  func(s *Spec) { s.Disks = []Disk{{Path: "/v/a", Format: "raw"}, {Path: "/v/b", Format: "raw"}} },
			wantS: []string{"drive=disk0,bootindex=1", "drive=disk1 "},
		},
		{
			name: "nics",
			edit: func(s *Spec) {
				s.Boot = Boot{From: "network"}
				s.NICs = []NIC{{Tap: "tap-a", MAC: "52:54:00:00:00:01"}, {MAC: "52:54:00:00:00:02", Model: "e1000"}}
			},
			flag: "-netdev", want: []string{"tap,id=net0,ifname=tap-a,script=no,downscript=no"},
			wantS: []string{
				"virtio-net-pci,id=nic0,mac=52:54:00:00:00:01,netdev=net0,bootindex=1",
				"e1000,id=nic1,mac=52:54:00:00:00:02,romfile=",
			},
		},
		{
			name: "kernel",
			edit: func(s *Spec) {
				s.Boot = Boot{From: "kernel", Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Cmdline: "console=ttyS0 quiet"}
			},
			flag: "-append", want: []string{"console=ttyS0 quiet"},
			wantS: []string{"-kernel /k/vmlinuz", "-initrd /k/initrd"},
		},
		{
			name: "uefi",
			edit: func(s *Spec) { s.Firmware = "uefi" },
			flag: "-blockdev",
			want: []string{
				"driver=file,node-name=fw-code,read-only=on,filename=/fw/code.fd",
				"driver=file,node-name=fw-vars,filename=" + dir + "/OVMF_VARS.fd",
			},
			wantS: []string{"-machine q35,graphics=off,pflash0=fw-code,pflash1=fw-vars"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := base
			if tt.edit != nil {
				tt.edit(&spec)
			}
			if err := validate(spec); err != nil {
				t.Fatalf("validate: %v", err)
			}
			args, err := q.commandLine(spec)
			if err != nil {
				t.Fatal(err)
			}
			if tt.flag != "" {
				if got := argsAfter(args, tt.flag); !slices.Equal(got, tt.want) {
					t.Errorf("%s values:\n got %q\nwant %q", tt.flag, got, tt.want)
				}
			}
			joined := strings.Join(args, " ") + " "
			for _, s := range tt.wantS {
				if !strings.Contains(joined, s) {
					t.Errorf("command line lacks %q:\n%s", s, joined)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := Spec{ID: "x", Dir: dir, CPUs: 1, MemoryMiB: 64, Firmware: "bios", Boot: Boot{From: "disk"}}
	if err := validate(good); err != nil {
		t.Fatalf("validate(good) = %v", err)
	}
	tests := []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"no id", func(s *Spec) { s.ID = "" }, "id is empty"},
		{"relative dir", func(s *Spec) { s.Dir = "vm" }, "not an absolute path"},
		{"missing dir", func(s *Spec) { s.Dir = dir + "/nope" }, "no such file"},
		{"long dir", func(s *Spec) { s.Dir = "/" + strings.Repeat("d", 100) }, "longer than 107 bytes"},
		{"no cpus", func(s *Spec) { s.CPUs = 0 }, "cpus is 0"},
		{"tiny memory", func(s *Spec) { s.MemoryMiB = 1 }, "memoryMiB is 1"},
		{"firmware", func(s *Spec) { s.Firmware = "coreboot" }, `firmware "coreboot"`},
		{"boot from", func(s *Spec) { s.Boot.From = "cdrom" }, `boot.from "cdrom"`},
		{"kernel missing", func(s *Spec) { s.Boot = Boot{From: "kernel"} }, "boot.kernel is empty"},
		{"network without nic", func(s *Spec) { s.Boot = Boot{From: "network"} }, "needs a nic"},
		{"disk format", func(s *Spec) { s.Disks = []Disk{{Path: "/a", Format: "vmdk"}} }, `disks[0]: format "vmdk"`},
		{"disk path", func(s *Spec) { s.Disks = []Disk{{Path: "a", Format: "raw"}} }, "disks[0]: path"},
		{"file as a protocol", func(s *Spec) {
			s.Disks = []Disk{{Format: "raw", Protocol: map[string]any{"driver": "file", "filename": "/etc/shadow"}}}
		}, `protocol driver "file"`},
		{"bad mac", func(s *Spec) { s.NICs = []NIC{{MAC: "nope"}} }, `nics[0]: mac "nope"`},
		{"bad tap", func(s *Spec) { s.NICs = []NIC{{MAC: "52:54:00:00:00:01", Tap: "a,b"}} }, `nics[0]: tap "a,b"`},
		{"bad model", func(s *Spec) { s.NICs = []NIC{{MAC: "52:54:00:00:00:01", Model: "e1000,x=y"}} }, "nics[0]: model"},
		{"same boot index", func(s *Spec) {
			s.Disks = []Disk{{Path: "/a", Format: "raw", BootIndex: 1}}
			s.NICs = []NIC{{MAC: "52:54:00:00:00:01", BootIndex: 1}}
		}, "bootIndex 1 is also disks[0]'s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := good
			tt.edit(&spec)
			err := validate(spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestVMUUID(t *testing.T) {
	if got := vmUUID("6F9619FF-8B86-D011-B42D-00C04FC964FF"); got != "6f9619ff-8b86-d011-b42d-00c04fc964ff" {
		t.Errorf("vmUUID(uuid) = %q", got)
	}
	a, b := vmUUID("tenant/vm1"), vmUUID("tenant/vm2")
	if a == b || a != vmUUID("tenant/vm1") || !uuidRE.MatchString(a) {
		t.Errorf("vmUUID of names: %q, %q", a, b)
	}
}
