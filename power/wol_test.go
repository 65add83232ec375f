package power

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/netns"
)

func TestMagicPacket(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}
	p := MagicPacket(mac)
	if len(p) != 102 {
		t.Fatalf("len = %d, want 102", len(p))
	}
	if !bytes.Equal(p[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("header = % x, want six ff", p[:6])
	}
	for i := range 16 {
		if got := p[6+6*i : 12+6*i]; !bytes.Equal(got, mac) {
			t.Errorf("repetition %d = % x, want % x", i, got, mac)
		}
	}
}

// newNetns makes an empty network namespace for the test, so its
// broadcasts cannot reach the machine's real network.
func newNetns(t *testing.T) netns.Handle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces")
	}
	ns, err := netns.New()
	if err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// wolPair makes two namespaces joined by a veth pair: a (wol0,
// 10.99.0.1/24), where the packet is sent from, and b (wol1, 10.99.0.2/24),
// where the "machine" listens.
func wolPair(t *testing.T) (a, b netns.Handle) {
	a, b = newNetns(t), newNetns(t)
	ha, err := netlink.NewHandleAt(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(b)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wol0"}, PeerName: "wol1", PeerNamespace: netlink.NsFd(b)}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	for _, l := range []struct {
		h    *netlink.Handle
		name string
		ip   net.IP
	}{{ha, "wol0", net.IPv4(10, 99, 0, 1)}, {hb, "wol1", net.IPv4(10, 99, 0, 2)}} {
		link, err := l.h.LinkByName(l.name)
		if err != nil {
			t.Fatal(err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: l.ip, Mask: net.CIDRMask(24, 32)}, Broadcast: net.IPv4(10, 99, 0, 255)}
		if err := l.h.AddrAdd(link, addr); err != nil {
			t.Fatal(err)
		}
		if err := l.h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
	// A packet sent before the pair has carrier is dropped.
	for _, l := range []struct {
		h    *netlink.Handle
		name string
	}{{ha, "wol0"}, {hb, "wol1"}} {
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			link, err := l.h.LinkByName(l.name)
			if err != nil {
				t.Fatal(err)
			}
			if link.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s is still %v", l.name, link.Attrs().OperState)
			}
		}
	}
	return a, b
}

func TestWakeOnLAN(t *testing.T) {
	a, b := wolPair(t)
	mac := "52:54:00:ab:cd:ef"
	want := append(bytes.Repeat([]byte{0xff}, 6), bytes.Repeat([]byte{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}, 16)...)

	tests := []struct {
		name  string
		wol   *api.WakeOnLAN
		iface string
		port  int
	}{
		// The broadcast address of the provisioning subnet finds its
		// interface through the routing table.
		{"subnet broadcast, default port", &api.WakeOnLAN{Broadcast: "10.99.0.255"}, "", 9},
		// 255.255.255.255 has no route in a's namespace: only binding to
		// the interface sends it, as the boot service does.
		{"limited broadcast from an interface, port 7", &api.WakeOnLAN{Port: 7}, "wol0", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conn net.PacketConn
			if err := netns.Do(b, func() (err error) {
				conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: tt.port})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()

			m := machine("m1", api.MachinePower{Driver: "wol", WOL: tt.wol})
			m.Spec.MAC = mac
			d, err := For(m, Options{Interface: tt.iface})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := netns.Do(a, func() error { return d.On(ctx) }); err != nil {
				t.Fatalf("On: %v", err)
			}
			buf := make([]byte, 1500)
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("no magic packet arrived: %v", err)
			}
			if !bytes.Equal(buf[:n], want) {
				t.Errorf("payload (%d bytes) = % x\nwant (%d bytes) % x", n, buf[:n], len(want), want)
			}
			if ip := from.(*net.UDPAddr).IP; !ip.Equal(net.IPv4(10, 99, 0, 1)) {
				t.Errorf("packet came from %v, want 10.99.0.1", from)
			}
		})
	}

	t.Run("interface that does not exist", func(t *testing.T) {
		d, err := For(machine("m1", api.MachinePower{Driver: "wol"}), Options{Interface: "nosuch0"})
		if err != nil {
			t.Fatal(err)
		}
		err = netns.Do(a, func() error { return d.On(context.Background()) })
		if err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("On = %v, want an error naming nosuch0", err)
		}
	})
}

func TestWakeOnLANCannotDoTheRest(t *testing.T) {
	d, err := For(machine("m1", api.MachinePower{Driver: "wol"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if s, err := d.Status(ctx); s != Unknown || !errors.Is(err, ErrUnsupported) {
		t.Errorf("Status = %q, %v; want unknown, ErrUnsupported", s, err)
	}
	for name, f := range map[string]func(context.Context) error{"Off": d.Off, "Cycle": d.Cycle, "BootOnceFromNetwork": d.BootOnceFromNetwork} {
		if err := f(ctx); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s = %v, want ErrUnsupported", name, err)
		}
	}
}
