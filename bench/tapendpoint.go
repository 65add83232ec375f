package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// tapEndpoint stands for a VM's guest on the tap the data plane made for
// its NIC: it opens the tap as QEMU would, and answers ARP and ICMP echo
// for the NIC's address in user space, so that what the network
// convergence benchmark times is the data plane's share and never a TCG
// guest's boot. It also pings: ARP for the target, then echo requests,
// until a reply.
type tapEndpoint struct {
	f   *os.File
	mac net.HardwareAddr
	ip  netip.Addr

	mu      sync.Mutex
	arp     map[netip.Addr]net.HardwareAddr // what ARP replies said
	replies chan netip.Addr                 // sources of echo replies to us
	// asked is when the first ARP request for ip came in.
	asked time.Time
	done  chan struct{}
}

// tapExists reports whether the link name exists in the named namespace.
func tapExists(nsName, name string) (bool, error) {
	ns, err := netns.Open(nsName)
	if err != nil {
		return false, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return false, err
	}
	defer h.Close()
	_, err = h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// waitOperUp waits until link name in namespace nsName is operationally
// up: for a tap, once the kernel has noticed that someone attached.
func waitOperUp(ctx context.Context, nsName, name string) error {
	ns, err := netns.Open(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// openTapEndpoint attaches to the existing tap name in namespace nsName
// (TUNSETIFF on a name that does not exist would make a new tap: check
// with tapExists first) and serves ARP and ICMP for ip at mac.
func openTapEndpoint(nsName, name string, mac net.HardwareAddr, ip netip.Addr) (*tapEndpoint, error) {
	var fd int
	err := netns.DoNamed(nsName, func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		// One queue and no packet information; the data plane leaves
		// the rest of the flags to whoever attaches (QEMU).
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("attaching to tap %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	e := &tapEndpoint{f: os.NewFile(uintptr(fd), name), mac: mac, ip: ip,
		arp: map[netip.Addr]net.HardwareAddr{}, replies: make(chan netip.Addr, 16), done: make(chan struct{})}
	go e.serve()
	return e, nil
}

func (e *tapEndpoint) Close() {
	e.f.Close()
	<-e.done
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

const (
	etherARP  = 0x0806
	etherIPv4 = 0x0800
)

func (e *tapEndpoint) serve() {
	defer close(e.done)
	buf := make([]byte, 65536)
	for {
		n, err := e.f.Read(buf)
		if err != nil {
			return
		}
		e.handle(buf[:n])
	}
}

func (e *tapEndpoint) handle(fr []byte) {
	if len(fr) < 14 {
		return
	}
	src := net.HardwareAddr(fr[6:12])
	payload := fr[14:]
	switch binary.BigEndian.Uint16(fr[12:14]) {
	case etherARP:
		if len(payload) < 28 || binary.BigEndian.Uint16(payload[2:4]) != etherIPv4 {
			return
		}
		op := binary.BigEndian.Uint16(payload[6:8])
		sha := net.HardwareAddr(append([]byte(nil), payload[8:14]...))
		spa := netip.AddrFrom4([4]byte(payload[14:18]))
		tpa := netip.AddrFrom4([4]byte(payload[24:28]))
		switch {
		case op == 1 && tpa == e.ip:
			e.mu.Lock()
			if e.asked.IsZero() {
				e.asked = time.Now()
			}
			e.mu.Unlock()
			e.write(arpFrame(2, e.mac, e.ip, sha, spa, sha))
		case op == 2:
			e.mu.Lock()
			e.arp[spa] = sha
			e.mu.Unlock()
		}
	case etherIPv4:
		if len(payload) < 20 || payload[0]>>4 != 4 || payload[9] != unix.IPPROTO_ICMP {
			return
		}
		hl := int(payload[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(payload[2:4]))
		if hl < 20 || total > len(payload) || total < hl+8 {
			return
		}
		from := netip.AddrFrom4([4]byte(payload[12:16]))
		to := netip.AddrFrom4([4]byte(payload[16:20]))
		icmp := payload[hl:total]
		if to != e.ip {
			return
		}
		switch icmp[0] {
		case 8: // echo request: answer to whoever sent the frame
			reply := append([]byte(nil), icmp...)
			reply[0] = 0
			reply[2], reply[3] = 0, 0
			binary.BigEndian.PutUint16(reply[2:4], checksum(reply))
			e.write(ipv4Frame(e.mac, src, e.ip, from, reply))
		case 0:
			select {
			case e.replies <- from:
			default:
			}
		}
	}
}

func (e *tapEndpoint) write(fr []byte) { _, _ = e.f.Write(fr) }

// ping sends to target every interval (ARP until it answers, then echo
// requests) until an echo reply comes back or ctx ends.
func (e *tapEndpoint) ping(ctx context.Context, target netip.Addr, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for seq := uint16(1); ; seq++ {
		e.mu.Lock()
		mac := e.arp[target]
		e.mu.Unlock()
		if mac == nil {
			e.write(arpFrame(1, e.mac, e.ip, broadcastMAC, target, nil))
		} else {
			e.write(ipv4Frame(e.mac, mac, e.ip, target, echoRequest(0x4e54, seq)))
		}
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case from := <-e.replies:
				if from == target {
					return nil
				}
				continue
			case <-t.C:
			}
			break
		}
	}
}

func arpFrame(op uint16, sha net.HardwareAddr, spa netip.Addr, dst net.HardwareAddr, tpa netip.Addr, tha net.HardwareAddr) []byte {
	fr := make([]byte, 14+28)
	copy(fr[0:6], dst)
	copy(fr[6:12], sha)
	binary.BigEndian.PutUint16(fr[12:14], etherARP)
	a := fr[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], etherIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha)
	s4, t4 := spa.As4(), tpa.As4()
	copy(a[14:18], s4[:])
	copy(a[18:24], tha) // zero for a request
	copy(a[24:28], t4[:])
	return fr
}

func ipv4Frame(src, dst net.HardwareAddr, from, to netip.Addr, icmp []byte) []byte {
	fr := make([]byte, 14+20+len(icmp))
	copy(fr[0:6], dst)
	copy(fr[6:12], src)
	binary.BigEndian.PutUint16(fr[12:14], etherIPv4)
	h := fr[14:34]
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(icmp)))
	h[8] = 64 // TTL
	h[9] = unix.IPPROTO_ICMP
	f4, t4 := from.As4(), to.As4()
	copy(h[12:16], f4[:])
	copy(h[16:20], t4[:])
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
	copy(fr[34:], icmp)
	return fr
}

// echoRequest is an ICMP echo request with its checksum.
func echoRequest(id, seq uint16) []byte {
	m := make([]byte, 8+16)
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	copy(m[8:], "hearth-netbench!")
	binary.BigEndian.PutUint16(m[2:4], checksum(m))
	return m
}

// checksum is the Internet checksum (RFC 1071) of b, whose checksum
// field is zero.
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// pingFromNetns pings target from a kernel ICMP socket in namespace
// nsName (the sandbox's internet) every interval until a reply or ctx
// ends.
func pingFromNetns(ctx context.Context, nsName string, target netip.Addr, interval time.Duration) error {
	var conn net.PacketConn
	err := netns.DoNamed(nsName, func() error {
		var err error
		conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return fmt.Errorf("an ICMP socket in %s: %w", nsName, err)
	}
	defer conn.Close()
	id := uint16(os.Getpid())
	dst := &net.IPAddr{IP: target.AsSlice()}
	buf := make([]byte, 1500)
	for seq := uint16(1); ; seq++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := conn.WriteTo(echoRequest(id, seq), dst); err != nil && !errors.Is(err, unix.ENETUNREACH) && !errors.Is(err, unix.EHOSTUNREACH) {
			return err
		}
		deadline := time.Now().Add(interval)
		for {
			_ = conn.SetReadDeadline(deadline)
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				break // the interval is up: send again
			}
			a, ok := from.(*net.IPAddr)
			if ok && a.IP.Equal(dst.IP) && n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:6]) == id {
				return nil
			}
		}
	}
}
