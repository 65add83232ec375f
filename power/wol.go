package power

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
)

// wol wakes a machine with a Wake-on-LAN magic packet. It can only turn
// the machine on: nothing in WoL turns it off or tells whether it is on.
type wol struct {
	machine string
	mac     net.HardwareAddr
	dst     netip.AddrPort
	iface   string
}

func newWOL(machine, mac string, w *api.WakeOnLAN, o Options) (*wol, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("machine %s: spec.mac: Wake-on-LAN needs a 6-byte Ethernet MAC, not %q", machine, mac)
	}
	// Default has filled in w; Validate has checked it.
	ip, err := netip.ParseAddr(w.Broadcast)
	if err != nil || !ip.Is4() {
		return nil, fmt.Errorf("machine %s: spec.power.wol.broadcast: %q is not an IPv4 address (Wake-on-LAN is an IPv4 broadcast)", machine, w.Broadcast)
	}
	return &wol{machine: machine, mac: hw, dst: netip.AddrPortFrom(ip, uint16(w.Port)), iface: o.Interface}, nil
}

func (d *wol) String() string {
	s := "wol " + d.dst.String()
	if d.iface != "" {
		s += " via " + d.iface
	}
	return s
}

// MagicPacket returns the Wake-on-LAN payload for mac: six 0xff bytes and
// then the MAC sixteen times.
func MagicPacket(mac net.HardwareAddr) []byte {
	p := bytes.Repeat([]byte{0xff}, 6)
	for range 16 {
		p = append(p, mac...)
	}
	return p
}

func (d *wol) On(ctx context.Context) error {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			if serr == nil && d.iface != "" {
				// Binding to the device rather than to its address is
				// what makes 255.255.255.255 leave through it.
				serr = unix.BindToDevice(int(fd), d.iface)
				if serr != nil {
					serr = fmt.Errorf("binding to interface %s: %w", d.iface, serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(ctx, "udp4", ":0")
	if err != nil {
		return fmt.Errorf("machine %s: wake-on-lan: %w", d.machine, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetWriteDeadline(dl)
	}
	if _, err := conn.WriteTo(MagicPacket(d.mac), net.UDPAddrFromAddrPort(d.dst)); err != nil {
		return fmt.Errorf("machine %s: wake-on-lan packet to %s: %w", d.machine, d.dst, err)
	}
	return nil
}

func (d *wol) Off(context.Context) error {
	return fmt.Errorf("machine %s: turning off with Wake-on-LAN: %w", d.machine, ErrUnsupported)
}

func (d *wol) Cycle(context.Context) error {
	return fmt.Errorf("machine %s: power-cycling with Wake-on-LAN: %w", d.machine, ErrUnsupported)
}

func (d *wol) Status(context.Context) (State, error) {
	return Unknown, fmt.Errorf("machine %s: reading the power state with Wake-on-LAN: %w", d.machine, ErrUnsupported)
}

func (d *wol) BootOnceFromNetwork(context.Context) error {
	return fmt.Errorf("machine %s: choosing the boot device with Wake-on-LAN (put network boot first in its firmware's boot order): %w", d.machine, ErrUnsupported)
}
