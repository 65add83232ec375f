package dataplanetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// Pinger sends ICMP echo requests from inside a namespace. Its sockets
// are opened in the namespace and used from the calling goroutine.
type Pinger struct {
	conn, conn6 *icmp.PacketConn
	id          int
	seq         int
}

// NewPinger opens ICMP sockets (IPv4 and IPv6) in the namespace.
func (n *Namespace) NewPinger() (*Pinger, error) {
	var c, c6 *icmp.PacketConn
	err := netns.Do(n.NS, func() error {
		var err error
		if c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); err != nil {
			return err
		}
		// IPv6 may be off in the namespace: then only IPv4 pings.
		c6, _ = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: ICMP socket: %w", n.Name, err)
	}
	return &Pinger{conn: c, conn6: c6, id: os.Getpid() & 0xffff}, nil
}

// Close closes the sockets.
func (p *Pinger) Close() error {
	if p.conn6 != nil {
		p.conn6.Close()
	}
	return p.conn.Close()
}

// Ping sends one echo request and waits up to timeout for its reply;
// it returns the round-trip time.
func (p *Pinger) Ping(dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	p.seq++
	seq := p.seq & 0xffff
	conn, proto := p.conn, 1
	var typ, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		if p.conn6 == nil {
			return 0, errors.New("no IPv6 in this namespace")
		}
		conn, proto = p.conn6, 58
		typ, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: []byte("hearth-dataplane")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, err
	}
	deadline := start.Add(timeout)
	buf := make([]byte, 1500)
	for {
		conn.SetReadDeadline(deadline)
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("no reply from %s: %w", dst, err)
		}
		rtt := time.Since(start)
		if a, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP); !ok || a.Unmap() != dst {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == p.id && e.Seq == seq {
			return rtt, nil
		}
	}
}

// Ping pings dst from the namespace until it answers or tries run out
// (one each 200ms): a path may take a moment to carry packets (see
// WaitOperUp).
func (n *Namespace) Ping(dst netip.Addr, tries int) error {
	p, err := n.NewPinger()
	if err != nil {
		return err
	}
	defer p.Close()
	var last error
	for range tries {
		if _, last = p.Ping(dst, 200*time.Millisecond); last == nil {
			return nil
		}
	}
	return fmt.Errorf("%s cannot reach %s: %w", n.Name, dst, last)
}

// Neighbour returns the MAC the namespace has for ip, if any.
func (n *Namespace) Neighbour(ip netip.Addr) (net.HardwareAddr, error) {
	h, err := n.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	fam := unix.AF_INET
	if ip.Is6() {
		fam = unix.AF_INET6
	}
	entries, err := h.NeighList(0, fam)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if a, ok := netip.AddrFromSlice(e.IP); ok && a.Unmap() == ip && len(e.HardwareAddr) == 6 {
			return e.HardwareAddr, nil
		}
	}
	return nil, nil
}

// Capture records the frames a link in a namespace sends and receives.
type Capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

// Capture starts recording on a link in the namespace.
func (n *Namespace) Capture(link string) (*Capture, error) {
	var fd int
	err := netns.Do(n.NS, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: capturing on %s: %w", n.Name, link, err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	c := &Capture{fd: fd, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			nr, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				c.mu.Lock()
				stopped := c.fd < 0
				c.mu.Unlock()
				if stopped {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			c.mu.Lock()
			c.frames = append(c.frames, slices.Clone(buf[:nr]))
			c.mu.Unlock()
		}
	}()
	return c, nil
}

// Stop ends the capture and returns the frames.
func (c *Capture) Stop() [][]byte {
	c.mu.Lock()
	fd := c.fd
	c.fd = -1
	c.mu.Unlock()
	<-c.done
	if fd >= 0 {
		unix.Close(fd)
	}
	return c.frames
}

// Frame is a decoded Ethernet frame, or the inner frame of a VXLAN
// packet.
type Frame struct {
	Dst, Src  net.HardwareAddr
	EtherType uint16
	Payload   []byte
	// VNI is set for frames decapsulated from VXLAN.
	VNI uint32
}

func (f Frame) String() string {
	return fmt.Sprintf("%s > %s type %#04x len %d", f.Src, f.Dst, f.EtherType, len(f.Payload))
}

// ParseFrame decodes an Ethernet frame.
func ParseFrame(b []byte) (Frame, bool) {
	if len(b) < 14 {
		return Frame{}, false
	}
	return Frame{Dst: net.HardwareAddr(b[0:6]), Src: net.HardwareAddr(b[6:12]), EtherType: binary.BigEndian.Uint16(b[12:14]), Payload: b[14:]}, true
}

// VXLANInner returns the inner frame of an IPv4/UDP VXLAN packet on
// port.
func VXLANInner(f Frame, port int) (Frame, bool) {
	if f.EtherType != unix.ETH_P_IP || len(f.Payload) < 20 {
		return Frame{}, false
	}
	ihl := int(f.Payload[0]&0xf) * 4
	if f.Payload[9] != unix.IPPROTO_UDP || len(f.Payload) < ihl+8+8 {
		return Frame{}, false
	}
	udp := f.Payload[ihl:]
	if int(binary.BigEndian.Uint16(udp[2:4])) != port {
		return Frame{}, false
	}
	vx := udp[8:]
	inner, ok := ParseFrame(vx[8:])
	inner.VNI = uint32(vx[4])<<16 | uint32(vx[5])<<8 | uint32(vx[6])
	return inner, ok
}

// ARPTarget returns the target protocol address of an ARP frame.
func (f Frame) ARPTarget() (netip.Addr, bool) {
	if f.EtherType != unix.ETH_P_ARP || len(f.Payload) < 28 {
		return netip.Addr{}, false
	}
	a, _ := netip.AddrFromSlice(f.Payload[24:28])
	return a, true
}

// UDPDstPort returns the destination port of an IPv4 UDP frame.
func (f Frame) UDPDstPort() (int, bool) {
	if f.EtherType != unix.ETH_P_IP || len(f.Payload) < 20 || f.Payload[9] != unix.IPPROTO_UDP {
		return 0, false
	}
	ihl := int(f.Payload[0]&0xf) * 4
	if len(f.Payload) < ihl+4 {
		return 0, false
	}
	return int(binary.BigEndian.Uint16(f.Payload[ihl+2:])), true
}

// IPv4Src returns the source of an IPv4 frame.
func (f Frame) IPv4Src() (netip.Addr, bool) {
	if f.EtherType != unix.ETH_P_IP || len(f.Payload) < 20 {
		return netip.Addr{}, false
	}
	a, _ := netip.AddrFromSlice(f.Payload[12:16])
	return a, true
}

// UDPServer answers every datagram with "NAME FROM", NAME the server's
// and FROM the address the datagram came from: who answered, and what
// address NAT left the asker.
type UDPServer struct {
	conn     *net.UDPConn
	done     chan struct{}
	received atomic.Int64
}

// Received counts the datagrams the server got.
func (s *UDPServer) Received() int64 { return s.received.Load() }

// ServeUDP starts a UDPServer in the namespace.
func (n *Namespace) ServeUDP(port int, name string) (*UDPServer, error) {
	var c *net.UDPConn
	err := netns.Do(n.NS, func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: UDP server: %w", n.Name, err)
	}
	s := &UDPServer{conn: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.received.Add(1)
			c.WriteToUDP([]byte(name+" "+from.IP.String()), from)
		}
	}()
	return s, nil
}

// Close stops the server.
func (s *UDPServer) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}

// AskUDP sends a datagram from the namespace to dst:port and returns the
// answer, trying for up to 10s: a path may still be coming up.
func (n *Namespace) AskUDP(dst netip.Addr, port int) (string, error) {
	return n.AskUDPFor(dst, port, 10*time.Second)
}

// AskUDPFor is AskUDP trying for up to total: to show something is not
// reachable, once something else showed the path works.
func (n *Namespace) AskUDPFor(dst netip.Addr, port int, total time.Duration) (string, error) {
	var c *net.UDPConn
	err := netns.Do(n.NS, func() error {
		var err error
		network := "udp4"
		if dst.Is6() {
			network = "udp6"
		}
		c, err = net.ListenUDP(network, nil)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 1500)
	var last error
	for deadline := time.Now().Add(total); time.Now().Before(deadline); {
		if _, err := c.WriteToUDP([]byte("who"), &net.UDPAddr{IP: dst.AsSlice(), Port: port}); err != nil {
			last = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		nr, _, err := c.ReadFromUDP(buf)
		if err == nil {
			return strings.TrimSpace(string(buf[:nr])), nil
		}
		last = err
	}
	return "", fmt.Errorf("%s: no answer from %s:%d: %w", n.Name, dst, port, last)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// BroadcastUDP sends one datagram from srcPort to 255.255.255.255:dstPort
// out of a link in the namespace, like a DHCP client's DISCOVER.
func (n *Namespace) BroadcastUDP(link string, srcPort, dstPort int) error {
	return netns.Do(n.NS, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if err := unix.BindToDevice(fd, link); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: srcPort}); err != nil {
			return err
		}
		return unix.Sendto(fd, []byte("hearth-broadcast"), 0, &unix.SockaddrInet4{Port: dstPort, Addr: [4]byte{255, 255, 255, 255}})
	})
}

// SendFrame sends a raw Ethernet frame out of a link in the namespace.
func (n *Namespace) SendFrame(link string, frame []byte) error {
	return netns.Do(n.NS, func() error {
		ifi, err := net.InterfaceByName(link)
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
