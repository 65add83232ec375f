package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// garpSchedule is when gratuitous ARPs go out after an address appears on
// a router's external leg: at once, and twice more in case the first was
// lost while the leg's bridge port was still coming up.
var garpSchedule = []time.Duration{0, 200 * time.Millisecond, time.Second}

// sendGARP announces that ip now lives on the link (in ns): a gratuitous
// ARP request (sender and target both ip) to the broadcast address. The
// external network's hosts and routers update the MAC they had for it,
// so a floating IP that moved here is reached here at once, not when
// their ARP caches expire. It does not wait: the announcements go out in
// the background (Close waits for them). Failures are logged, never
// fatal: the address answers ARP anyway.
func (p *Linux) sendGARP(ns netns.Handle, link string, ip netip.Addr) {
	if !ip.Is4() {
		return
	}
	var fd int
	var frame []byte
	var to unix.SockaddrLinklayer
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		frame = garpPacket(ifi.HardwareAddr, ip)
		to = unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		return nil
	})
	if err != nil {
		p.logf("dataplane: gratuitous ARP for %s on %s: %v", ip, link, err)
		return
	}
	p.logf("dataplane: announcing %s on %s (gratuitous ARP)", ip, link)
	p.garps.Add(1)
	go func() {
		defer p.garps.Done()
		defer unix.Close(fd)
		start := time.Now()
		for _, at := range garpSchedule {
			time.Sleep(time.Until(start.Add(at)))
			if err := unix.Sendto(fd, frame, 0, &to); err != nil {
				p.logf("dataplane: gratuitous ARP for %s on %s: %v", ip, link, err)
			}
		}
	}()
}

// garpPacket is an Ethernet/IPv4 ARP request announcing ip at mac.
func garpPacket(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)             // hardware: Ethernet
	binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP) // protocol: IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[14:18], a[:]) // sender
	// target hardware address zero
	copy(b[24:28], a[:]) // target
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
