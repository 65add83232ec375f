package dataplane_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// Anti-spoofing in the style of Neutron's ARP-spoof suite: a VM (a
// namespace attached like a tap) sends forged frames at a VM on its own
// host and at one on another host. Each forgery is dropped on the way out
// of its port; the same frame with the sender's own addresses arrives,
// and pings still flow.
func TestAntiSpoofing(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("spoof", 100, false, "10.20.0.0/24", "fd00:20::/64")
	attacker := c.addVM("attacker", "spoof", 0, "10.20.0.10")
	local := c.addVM("local", "spoof", 0, "10.20.0.11")
	remote := c.addVM("remote", "spoof", 1, "10.20.0.12")
	c.apply()
	c.mustPing("attacker", local.addr)
	c.mustPing("attacker", remote.addr)
	c.mustPing("local", remote.addr)

	forgedMAC := net.HardwareAddr{0x52, 0x54, 0, 0xde, 0xad, 0x01}
	forgedIP := netip.MustParseAddr("10.20.0.99")
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for _, victim := range []*tvm{local, remote} {
		cases := []struct {
			name   string
			frame  []byte
			passes bool
		}{
			{"legitimate UDP", udpFrame(attacker.mac, victim.mac, attacker.addr, victim.addr, 4000, 4001), true},
			{"forged source MAC", udpFrame(forgedMAC, victim.mac, attacker.addr, victim.addr, 4000, 4001), false},
			{"forged source IP", udpFrame(attacker.mac, victim.mac, forgedIP, victim.addr, 4000, 4001), false},
			{"legitimate ARP reply", arpFrame(attacker.mac, victim.mac, 2, attacker.mac, attacker.addr, victim.mac, victim.addr), true},
			{"forged ARP reply for a peer's address", arpFrame(attacker.mac, victim.mac, 2, attacker.mac, c.peerOf(victim).addr, victim.mac, victim.addr), false},
			{"ARP with a forged sender MAC", arpFrame(attacker.mac, victim.mac, 2, forgedMAC, attacker.addr, victim.mac, victim.addr), false},
			{"rogue DHCP offer", udpFrame(attacker.mac, bcast, attacker.addr, netip.MustParseAddr("255.255.255.255"), 67, 68), false},
			// A client's DHCP passes its port, and stays on its host
			// (the host's own router answers it).
			{"DHCP discover from 0.0.0.0", udpFrame(attacker.mac, bcast, netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 68, 67), victim == local},
			{"rogue router advertisement", raFrame(attacker.mac), false},
			{"VLAN-tagged frame", vlanFrame(attacker.mac, victim.mac), false},
			{"IPv6 from its SLAAC address", udp6Frame(attacker.mac, victim.mac, slaac(attacker), slaac(victim)), true},
			{"IPv6 from a forged address", udp6Frame(attacker.mac, victim.mac, netip.MustParseAddr("fd00:20::99"), slaac(victim)), false},
			{"IPv6 from a peer's address", udp6Frame(attacker.mac, victim.mac, slaac(c.peerOf(victim)), slaac(victim)), false},
			{"neighbour advertisement for itself", naFrame(attacker.mac, victim.mac, dataplane.LinkLocal(attacker.mac), slaac(attacker)), true},
			{"neighbour advertisement for a peer's address", naFrame(attacker.mac, victim.mac, dataplane.LinkLocal(attacker.mac), slaac(c.peerOf(victim))), false},
		}
		for _, tc := range cases {
			t.Run(victim.name+"/"+tc.name, func(t *testing.T) {
				got := deliver(t, attacker.ns, victim.ns, tc.frame)
				if got != tc.passes {
					t.Errorf("frame arrived at %s: %t, want %t", victim.name, got, tc.passes)
				}
			})
		}
	}
	// The forged ARP reply changed nothing: the local VM still reaches
	// the remote one.
	c.mustPing("local", remote.addr)
	c.mustPing("attacker", local.addr)
}

// peerOf is a VM of the same network other than vm and the attacker.
func (c *tcluster) peerOf(vm *tvm) *tvm {
	for _, o := range c.vms {
		if o != vm && o.name != "attacker" && o.net == vm.net {
			return o
		}
	}
	c.t.Fatalf("no peer of %s", vm.name)
	return nil
}

// deliver sends frame from one namespace's NIC and reports whether the
// other's NIC saw it (by its bytes after the Ethernet header, which the
// path does not change) within a second.
func deliver(t *testing.T, from, to *dataplanetest.Namespace, frame []byte) bool {
	t.Helper()
	capture, err := to.Capture(dataplanetest.VMLink)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := sendFrame(from, frame); err != nil {
			capture.Stop()
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	frames := capture.Stop()
	for _, f := range frames {
		if len(f) >= len(frame) && bytes.Equal(f[14:len(frame)], frame[14:]) {
			return true
		}
	}
	return false
}

func sendFrame(ns *dataplanetest.Namespace, frame []byte) error {
	return netns.Do(ns.NS, func() error {
		ifi, err := net.InterfaceByName(dataplanetest.VMLink)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
	})
}

func ether(src, dst net.HardwareAddr, typ uint16) []byte {
	b := append(append([]byte{}, dst...), src...)
	return binary.BigEndian.AppendUint16(b, typ)
}

// udpFrame is an IPv4/UDP frame with a payload that marks it.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) []byte {
	payload := []byte(fmt.Sprintf("hearth-spoof-%s-%s-%d", srcMAC, src, sport))
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, dport)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	ip := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	s4, d4 := src.As4(), dst.As4()
	ip = append(append(ip, s4[:]...), d4[:]...)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	return append(append(ether(srcMAC, dstMAC, unix.ETH_P_IP), ip...), udp...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func arpFrame(srcMAC, dstMAC net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := []byte{0, 1, 8, 0, 6, 4}
	b = binary.BigEndian.AppendUint16(b, op)
	s4, t4 := spa.As4(), tpa.As4()
	b = append(append(append(append(b, sha...), s4[:]...), tha...), t4[:]...)
	return append(ether(srcMAC, dstMAC, unix.ETH_P_ARP), b...)
}

// raFrame is a router advertisement to all nodes from the sender's
// link-local address.
func raFrame(srcMAC net.HardwareAddr) []byte {
	icmp := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	ip := []byte{0x60, 0, 0, 0}
	ip = binary.BigEndian.AppendUint16(ip, uint16(len(icmp)))
	ip = append(ip, unix.IPPROTO_ICMPV6, 255)
	ll := dataplane.LinkLocal(srcMAC).As16()
	all := netip.MustParseAddr("ff02::1").As16()
	ip = append(append(ip, ll[:]...), all[:]...)
	return append(append(ether(srcMAC, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, unix.ETH_P_IPV6), ip...), icmp...)
}

func slaac(vm *tvm) netip.Addr {
	return dataplane.SLAAC(netip.MustParsePrefix("fd00:20::/64"), vm.mac)
}

func ip6Frame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, proto byte, payload []byte) []byte {
	ip := []byte{0x60, 0, 0, 0}
	ip = binary.BigEndian.AppendUint16(ip, uint16(len(payload)))
	ip = append(ip, proto, 255)
	s, d := src.As16(), dst.As16()
	ip = append(append(ip, s[:]...), d[:]...)
	return append(append(ether(srcMAC, dstMAC, unix.ETH_P_IPV6), ip...), payload...)
}

func udp6Frame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr) []byte {
	payload := []byte(fmt.Sprintf("hearth-spoof6-%s", src))
	udp := binary.BigEndian.AppendUint16(nil, 4000)
	udp = binary.BigEndian.AppendUint16(udp, 4001)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(append(udp, 0, 0), payload...)
	return ip6Frame(srcMAC, dstMAC, src, dst, unix.IPPROTO_UDP, udp)
}

// naFrame is a neighbour advertisement (solicited, override) for target.
func naFrame(srcMAC, dstMAC net.HardwareAddr, src, target netip.Addr) []byte {
	t := target.As16()
	icmp := append([]byte{136, 0, 0, 0, 0x60, 0, 0, 0}, t[:]...)
	icmp = append(append(icmp, 2, 1), srcMAC...) // target link-layer address option
	return ip6Frame(srcMAC, dstMAC, src, dataplane.LinkLocal(dstMAC), unix.IPPROTO_ICMPV6, icmp)
}

// vlanFrame is an 802.1Q-tagged frame (VLAN 5) carrying IPv4.
func vlanFrame(srcMAC, dstMAC net.HardwareAddr) []byte {
	b := ether(srcMAC, dstMAC, unix.ETH_P_8021Q)
	b = append(b, 0, 5, 0x08, 0)
	return append(b, []byte("hearth-spoof-vlan-tagged-frame-payload")...)
}
