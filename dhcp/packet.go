package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// BOOTP op codes.
const (
	BootRequest = 1
	BootReply   = 2
)

// FlagBroadcast is the broadcast bit of the flags field: the client cannot
// receive unicast before it is configured, so the answer must be broadcast.
const FlagBroadcast = 0x8000

const (
	headerLen   = 236
	cookieLen   = 4
	minReplyLen = 300 // BOOTP's minimum; some firmware drops shorter packets
)

var magicCookie = [cookieLen]byte{99, 130, 83, 99}

// Packet is one DHCPv4 message (RFC 2131 section 2). Addresses are always
// IPv4; a zero Addr is written as 0.0.0.0.
//
// A Packet may be reused with Unmarshal and Reset to parse and build
// packets without allocating: option data then points into storage the
// packet owns, valid until its next Unmarshal or Reset.
type Packet struct {
	Op     uint8
	HType  uint8
	HLen   uint8
	Hops   uint8
	XID    uint32
	Secs   uint16
	Flags  uint16
	CIAddr netip.Addr // client's address, when it has one (renew, inform)
	YIAddr netip.Addr // "your" address: the one offered or acknowledged
	SIAddr netip.Addr // next server: where to fetch the boot file (TFTP)
	GIAddr netip.Addr // relay agent, when relayed
	CHAddr [16]byte
	SName  [64]byte
	File   [128]byte
	// Options in order, without pad, end and overload (52): Parse folds
	// options carried in the sname and file fields into this list.
	Options Options

	in    []byte // copy of the parsed packet; received option data points into it
	arena []byte // option data set with SetOption
}

// Parse decodes a DHCP packet. It never panics: input that is too short,
// or whose options run past the end, is an error.
func Parse(b []byte) (*Packet, error) {
	p := new(Packet)
	if err := p.Unmarshal(b); err != nil {
		return nil, err
	}
	return p, nil
}

// Unmarshal decodes b into p, reusing p's storage. b is not retained.
//
// A packet without the magic cookie is taken as BOOTP: its fields are
// decoded and it has no options. Options with the same code are joined
// (RFC 3396); overload (option 52) is followed into the file and sname
// fields, which are then cleared.
func (p *Packet) Unmarshal(b []byte) error {
	if len(b) < headerLen {
		return fmt.Errorf("dhcp: packet of %d bytes is shorter than the %d-byte header", len(b), headerLen)
	}
	p.in = append(p.in[:0], b...)
	b = p.in
	p.Op, p.HType, p.HLen, p.Hops = b[0], b[1], b[2], b[3]
	p.XID = binary.BigEndian.Uint32(b[4:])
	p.Secs = binary.BigEndian.Uint16(b[8:])
	p.Flags = binary.BigEndian.Uint16(b[10:])
	p.CIAddr = netip.AddrFrom4([4]byte(b[12:16]))
	p.YIAddr = netip.AddrFrom4([4]byte(b[16:20]))
	p.SIAddr = netip.AddrFrom4([4]byte(b[20:24]))
	p.GIAddr = netip.AddrFrom4([4]byte(b[24:28]))
	copy(p.CHAddr[:], b[28:44])
	copy(p.SName[:], b[44:108])
	copy(p.File[:], b[108:236])
	p.Options = p.Options[:0]
	p.arena = p.arena[:0]
	if len(b) < headerLen+cookieLen || [cookieLen]byte(b[headerLen:headerLen+cookieLen]) != magicCookie {
		return nil
	}
	if err := p.parseOptions(b[headerLen+cookieLen:], "options"); err != nil {
		return err
	}
	overload, ok := p.Options.Get(OptOverload)
	if !ok {
		return nil
	}
	p.Options.Del(OptOverload)
	if len(overload) != 1 {
		return nil
	}
	// RFC 2131 section 4.1: options, then file, then sname.
	if overload[0]&1 != 0 {
		if err := p.parseOptions(b[108:236], "file"); err != nil {
			return err
		}
		p.File = [128]byte{}
	}
	if overload[0]&2 != 0 {
		if err := p.parseOptions(b[44:108], "sname"); err != nil {
			return err
		}
		p.SName = [64]byte{}
	}
	return nil
}

func (p *Packet) parseOptions(b []byte, area string) error {
	for i := 0; i < len(b); {
		code := OptionCode(b[i])
		switch code {
		case OptPad:
			i++
			continue
		case OptEnd:
			return nil
		}
		if i+1 >= len(b) {
			return fmt.Errorf("dhcp: option %d in the %s field has no length", code, area)
		}
		n := int(b[i+1])
		if i+2+n > len(b) {
			return fmt.Errorf("dhcp: option %d in the %s field is %d bytes long but only %d remain", code, area, n, len(b)-i-2)
		}
		data := b[i+2 : i+2+n : i+2+n]
		i += 2 + n
		if code == OptOverload && area != "options" {
			continue // only meaningful in the options field
		}
		if prev, ok := p.Options.Get(code); ok {
			// A long option split in parts (RFC 3396): join them. Rare,
			// so a fresh array is fine.
			joined := make([]byte, 0, len(prev)+len(data))
			p.Options.Set(code, append(append(joined, prev...), data...))
			continue
		}
		p.Options = append(p.Options, Option{Code: code, Data: data})
	}
	return nil
}

// Marshal encodes p.
func (p *Packet) Marshal() []byte { return p.AppendTo(nil) }

// AppendTo appends the encoded packet to dst, so a caller reusing a buffer
// encodes without allocating. Options longer than 255 bytes are split
// (RFC 3396); the packet is padded to BOOTP's 300 bytes.
func (p *Packet) AppendTo(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, p.Op, p.HType, p.HLen, p.Hops)
	dst = binary.BigEndian.AppendUint32(dst, p.XID)
	dst = binary.BigEndian.AppendUint16(dst, p.Secs)
	dst = binary.BigEndian.AppendUint16(dst, p.Flags)
	for _, a := range [4]netip.Addr{p.CIAddr, p.YIAddr, p.SIAddr, p.GIAddr} {
		b := as4(a)
		dst = append(dst, b[:]...)
	}
	dst = append(dst, p.CHAddr[:]...)
	dst = append(dst, p.SName[:]...)
	dst = append(dst, p.File[:]...)
	dst = append(dst, magicCookie[:]...)
	for _, o := range p.Options {
		if o.Code == OptPad || o.Code == OptEnd {
			continue
		}
		data := o.Data
		for {
			n := min(len(data), 255)
			dst = append(dst, byte(o.Code), byte(n))
			dst = append(dst, data[:n]...)
			data = data[n:]
			if len(data) == 0 {
				break
			}
		}
	}
	dst = append(dst, byte(OptEnd))
	for len(dst)-start < minReplyLen {
		dst = append(dst, 0)
	}
	return dst
}

// as4 returns a as four bytes; anything but an IPv4 address is 0.0.0.0.
func as4(a netip.Addr) [4]byte {
	if a.Is4() {
		return a.As4()
	}
	return [4]byte{}
}

// Reset clears p for building a new packet, keeping its storage.
func (p *Packet) Reset() {
	in, arena, opts := p.in[:0], p.arena[:0], p.Options[:0]
	*p = Packet{in: in, arena: arena, Options: opts}
}

// SetOption sets an option to a copy of data, kept in storage p owns.
func (p *Packet) SetOption(code OptionCode, data []byte) {
	start := len(p.arena)
	p.arena = append(p.arena, data...)
	p.Options.Set(code, p.arena[start:len(p.arena):len(p.arena)])
}

// SetIPs sets an address (list) option such as 1, 3, 6 or 54.
func (p *Packet) SetIPs(code OptionCode, ips ...netip.Addr) {
	start := len(p.arena)
	for _, ip := range ips {
		b := as4(ip)
		p.arena = append(p.arena, b[:]...)
	}
	p.Options.Set(code, p.arena[start:len(p.arena):len(p.arena)])
}

// SetUint32 sets a 32-bit option such as 51, 58 or 59.
func (p *Packet) SetUint32(code OptionCode, v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	p.SetOption(code, b[:])
}

// SetString sets a text option.
func (p *Packet) SetString(code OptionCode, s string) {
	start := len(p.arena)
	p.arena = append(p.arena, s...)
	p.Options.Set(code, p.arena[start:len(p.arena):len(p.arena)])
}

// SetMessageType sets option 53.
func (p *Packet) SetMessageType(t MessageType) { p.SetOption(OptMessageType, []byte{byte(t)}) }

// MessageType returns option 53, or 0 for BOOTP.
func (p *Packet) MessageType() MessageType { return p.Options.MessageType() }

// HardwareAddr returns the client hardware address, chaddr cut to hlen. It
// points into p.
func (p *Packet) HardwareAddr() net.HardwareAddr {
	n := min(int(p.HLen), len(p.CHAddr))
	return p.CHAddr[:n:n]
}

// SetHardwareAddr sets htype (Ethernet when 6 bytes), hlen and chaddr.
func (p *Packet) SetHardwareAddr(mac net.HardwareAddr) {
	p.HType = 1
	p.HLen = uint8(min(len(mac), len(p.CHAddr)))
	p.CHAddr = [16]byte{}
	copy(p.CHAddr[:], mac)
}

// BootFile returns the file field up to its first NUL, or option 67 when
// the field is empty.
func (p *Packet) BootFile() string {
	if s := cString(p.File[:]); s != "" {
		return s
	}
	return p.Options.String(OptBootFileName)
}

// ServerName returns the sname field up to its first NUL.
func (p *Packet) ServerName() string { return cString(p.SName[:]) }

// ErrFieldTooLong says a string does not fit its fixed field.
var ErrFieldTooLong = errors.New("dhcp: string does not fit the field")

// SetFile sets the file field; it must leave room for a NUL.
func (p *Packet) SetFile(s string) error {
	if len(s) >= len(p.File) {
		return ErrFieldTooLong
	}
	p.File = [128]byte{}
	copy(p.File[:], s)
	return nil
}

// SetServerName sets the sname field; it must leave room for a NUL.
func (p *Packet) SetServerName(s string) error {
	if len(s) >= len(p.SName) {
		return ErrFieldTooLong
	}
	p.SName = [64]byte{}
	copy(p.SName[:], s)
	return nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// String summarises p for logs and test failures.
func (p *Packet) String() string {
	return fmt.Sprintf("%v xid=%#08x chaddr=%s ciaddr=%s yiaddr=%s siaddr=%s giaddr=%s file=%q options=%d",
		p.MessageType(), p.XID, p.HardwareAddr(), p.CIAddr, p.YIAddr, p.SIAddr, p.GIAddr, p.BootFile(), len(p.Options))
}
