package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var testMAC = net.HardwareAddr{0x02, 0, 0, 0xaa, 0xbb, 0x01}

// ipxeDiscover is a DISCOVER as iPXE on UEFI x86-64 sends it: vendor
// class PXEClient, arch 7, NDI, a machine UUID, user class "iPXE" (bare,
// not RFC 3004) and the iPXE option space 175.
func ipxeDiscover() *Packet {
	p := &Packet{Op: BootRequest, XID: 0x1234abcd, Flags: FlagBroadcast}
	p.SetHardwareAddr(testMAC)
	p.SetMessageType(MsgDiscover)
	p.SetOption(OptMaxMessageSize, []byte{0x05, 0xc0})
	p.SetOption(OptClientArch, []byte{0, 7})
	p.SetOption(OptClientNDI, []byte{1, 3, 10})
	p.SetString(OptVendorClass, "PXEClient:Arch:00007:UNDI:003010")
	p.SetString(OptUserClass, "iPXE")
	p.SetOption(OptParamRequest, []byte{1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203})
	p.SetOption(OptIPXEEncap, []byte{0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0xeb, 0x03, 0x01, 0x00, 0x00, 0x17, 0x01, 0x01, 0x15, 0x01, 0x01, 0x18, 0x01, 0x01, 0x12, 0x01, 0x01})
	p.SetOption(OptClientMachineID, append([]byte{0}, 0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff))
	return p
}

func TestRoundTripTypedOptions(t *testing.T) {
	p := ipxeDiscover()
	p.CIAddr = netip.MustParseAddr("10.0.0.9")
	p.GIAddr = netip.MustParseAddr("10.0.0.254")
	p.SetIPs(OptRequestedIP, netip.MustParseAddr("10.0.0.50"))
	p.SetIPs(OptDNS, netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("9.9.9.9"))
	p.SetUint32(OptLeaseTime, 3600)
	p.SetString(OptHostname, "node1")
	if err := p.SetFile("undionly.kpxe"); err != nil {
		t.Fatal(err)
	}
	b := p.Marshal()
	if len(b) < minReplyLen {
		t.Errorf("marshalled %d bytes, want at least %d", len(b), minReplyLen)
	}
	q, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	o := q.Options
	checks := []struct {
		name      string
		got, want any
	}{
		{"type", q.MessageType(), MsgDiscover},
		{"mac", q.HardwareAddr().String(), testMAC.String()},
		{"xid", q.XID, uint32(0x1234abcd)},
		{"flags", q.Flags, uint16(FlagBroadcast)},
		{"ciaddr", q.CIAddr, netip.MustParseAddr("10.0.0.9")},
		{"giaddr", q.GIAddr, netip.MustParseAddr("10.0.0.254")},
		{"file", q.BootFile(), "undionly.kpxe"},
		{"requested", must(o.IP(OptRequestedIP)), netip.MustParseAddr("10.0.0.50")},
		{"dns", o.IPs(OptDNS), []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("9.9.9.9")}},
		{"lease", must(o.LeaseTime()).String(), "1h0m0s"},
		{"hostname", o.String(OptHostname), "node1"},
		{"arch", must(o.ClientArch()), uint16(7)},
		{"uuid", must(o.ClientUUID()), "00112233-4455-6677-8899-aabbccddeeff"},
		{"vendor", o.String(OptVendorClass), "PXEClient:Arch:00007:UNDI:003010"},
		{"user class", o.UserClasses(), []string{"iPXE"}},
		{"max size", must(o.Uint16(OptMaxMessageSize)), uint16(1472)},
		{"requests 175", o.Requested(OptIPXEEncap), true},
		{"requests 42", o.Requested(42), false},
		{"ipxe", o.Has(OptIPXEEncap), true},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if !bytes.Equal(q.Marshal(), b) {
		t.Error("marshal(parse(b)) != b")
	}
}

func must[T any](v T, ok bool) T { return v }

func TestUserClassRFC3004(t *testing.T) {
	var p Packet
	p.SetOption(OptUserClass, []byte{4, 'i', 'P', 'X', 'E', 3, 'f', 'o', 'o'})
	if got := p.Options.UserClasses(); !reflect.DeepEqual(got, []string{"iPXE", "foo"}) {
		t.Errorf("got %q", got)
	}
}

// A long option is split on the wire and joined again on parse (RFC 3396).
func TestLongOptionSplitAndJoined(t *testing.T) {
	p := &Packet{Op: BootReply}
	url := "http://boot.example/" + strings.Repeat("x", 300)
	p.SetString(OptBootFileName, url)
	b := p.Marshal()
	if n := bytes.Count(b, []byte{byte(OptBootFileName), 255}); n != 1 {
		t.Errorf("found %d full-length parts of option 67, want 1", n)
	}
	q, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.BootFile(); got != url {
		t.Errorf("boot file: got %d bytes, want %d", len(got), len(url))
	}
}

// overloaded builds a packet whose options continue in the file and sname
// fields (option 52 = 3).
func overloaded() []byte {
	p := &Packet{Op: BootRequest}
	p.SetHardwareAddr(testMAC)
	b := p.Marshal()
	b = b[:headerLen+cookieLen]
	b = append(b, 53, 1, 1, 52, 1, 3, 12, 2, 'n', 'o', 255)
	copy(b[108:], []byte{12, 3, 'd', 'e', '1', 67, 4, 'b', 'o', 'o', 't', 255}) // file
	copy(b[44:], []byte{15, 3, 'l', 'a', 'b', 0, 0, 255})                       // sname
	return b
}

func TestOverload(t *testing.T) {
	p, err := Parse(overloaded())
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Options.String(OptHostname); got != "node1" {
		t.Errorf("hostname joined across fields: got %q, want %q", got, "node1")
	}
	if got := p.BootFile(); got != "boot" {
		t.Errorf("boot file from option 67 in the file field: got %q", got)
	}
	if got := p.Options.String(OptDomainName); got != "lab" {
		t.Errorf("domain from the sname field: got %q", got)
	}
	if p.Options.Has(OptOverload) || p.File != [128]byte{} || p.SName != [64]byte{} {
		t.Error("overload and the fields it used should be consumed")
	}
}

func TestMalformed(t *testing.T) {
	good := ipxeDiscover().Marshal()
	cases := map[string][]byte{
		"empty":              nil,
		"short header":       good[:100],
		"length past end":    append(append([]byte{}, good[:240]...), 12, 10, 'a'),
		"code without len":   append(append([]byte{}, good[:240]...), 12),
		"overload truncated": func() []byte { b := overloaded(); b[108+1] = 200; return b }(),
	}
	for name, b := range cases {
		if p, err := Parse(b); err == nil {
			t.Errorf("%s: parsed as %v, want an error", name, p)
		}
	}
	// BOOTP: no cookie, no options, not an error.
	b := append([]byte{}, good[:headerLen]...)
	p, err := Parse(b)
	if err != nil || len(p.Options) != 0 {
		t.Errorf("BOOTP packet: got %v, %v", p, err)
	}
}

func TestSubOptions(t *testing.T) {
	subs := SubOptions([]byte{6, 1, 8, 0, 71, 4, 0x80, 0, 0, 0, 255, 9, 9})
	if d, _ := subs.Get(PXEDiscoveryControl); !bytes.Equal(d, []byte{8}) {
		t.Errorf("discovery control: got %v", d)
	}
	if d, _ := subs.Get(PXEBootItem); len(d) != 4 {
		t.Errorf("boot item: got %v", d)
	}
	if SubOptions([]byte{6, 5, 1}) != nil {
		t.Error("truncated sub-option should give nil")
	}
}

// seedPackets are real packets captured from clients (testdata/*.bin)
// and built ones.
func seedPackets(t testing.TB) [][]byte {
	files, _ := filepath.Glob("testdata/*.bin")
	if len(files) == 0 {
		t.Fatal("no captured packets in testdata")
	}
	var seeds [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return append(seeds, ipxeDiscover().Marshal(), overloaded())
}

func TestCapturedPacketsParse(t *testing.T) {
	for _, b := range seedPackets(t) {
		p, err := Parse(b)
		if err != nil {
			t.Errorf("%x: %v", b[:16], err)
			continue
		}
		if p.MessageType() == 0 {
			t.Errorf("%v: no message type", p)
		}
	}
}

// FuzzParse checks that no input makes Parse panic, and that whatever it
// accepts encodes to a canonical form that parses back to itself.
func FuzzParse(f *testing.F) {
	for _, b := range seedPackets(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		_ = p.String()
		_, _ = p.Options.ClientUUID()
		_ = p.Options.UserClasses()
		_ = p.Options.IPs(OptRouter)
		if enc, ok := p.Options.Get(OptVendorSpecific); ok {
			_ = SubOptions(enc)
		}
		m1 := p.Marshal()
		q, err := Parse(m1)
		if err != nil {
			t.Fatalf("re-parsing marshalled packet: %v", err)
		}
		if m2 := q.Marshal(); !bytes.Equal(m1, m2) {
			t.Fatalf("marshal is not stable:\n%x\n%x", m1, m2)
		}
	})
}

// Parsing into a reused packet allocates nothing.
func TestUnmarshalNoAllocs(t *testing.T) {
	b := ipxeDiscover().Marshal()
	var p Packet
	var out []byte
	allocs := testing.AllocsPerRun(100, func() {
		if err := p.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		out = p.AppendTo(out[:0])
	})
	if allocs != 0 {
		t.Errorf("Unmarshal+AppendTo: %v allocations per packet, want 0", allocs)
	}
}

func BenchmarkParse(b *testing.B) {
	pkt := ipxeDiscover().Marshal()
	var p Packet
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Unmarshal(pkt)
	}
}
