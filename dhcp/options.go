package dhcp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// OptionCode is a DHCPv4 option tag (RFC 2132 and later).
type OptionCode uint8

// The options Hearth reads or writes.
const (
	OptPad             OptionCode = 0
	OptSubnetMask      OptionCode = 1
	OptRouter          OptionCode = 3
	OptDNS             OptionCode = 6
	OptHostname        OptionCode = 12
	OptDomainName      OptionCode = 15
	OptInterfaceMTU    OptionCode = 26
	OptBroadcastAddr   OptionCode = 28
	OptVendorSpecific  OptionCode = 43 // PXE options in ProxyDHCP answers
	OptRequestedIP     OptionCode = 50
	OptLeaseTime       OptionCode = 51
	OptOverload        OptionCode = 52
	OptMessageType     OptionCode = 53
	OptServerID        OptionCode = 54
	OptParamRequest    OptionCode = 55
	OptMessage         OptionCode = 56
	OptMaxMessageSize  OptionCode = 57
	OptRenewalTime     OptionCode = 58
	OptRebindingTime   OptionCode = 59
	OptVendorClass     OptionCode = 60
	OptClientID        OptionCode = 61
	OptTFTPServerName  OptionCode = 66
	OptBootFileName    OptionCode = 67
	OptUserClass       OptionCode = 77
	OptClientArch      OptionCode = 93  // RFC 4578
	OptClientNDI       OptionCode = 94  // RFC 4578
	OptClientMachineID OptionCode = 97  // RFC 4578: type 0 and a UUID
	OptClasslessRoutes OptionCode = 121 // RFC 3442
	OptIPXEEncap       OptionCode = 175
	OptEnd             OptionCode = 255
)

// MessageType is the value of option 53.
type MessageType uint8

// The DHCP message types of RFC 2132 section 9.6.
const (
	MsgDiscover MessageType = 1
	MsgOffer    MessageType = 2
	MsgRequest  MessageType = 3
	MsgDecline  MessageType = 4
	MsgAck      MessageType = 5
	MsgNak      MessageType = 6
	MsgRelease  MessageType = 7
	MsgInform   MessageType = 8
)

var messageTypeNames = [...]string{"", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"}

func (t MessageType) String() string {
	if int(t) < len(messageTypeNames) && t != 0 {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Option is one option of a packet. Data excludes the code and length
// bytes; an option longer than 255 bytes is split on the wire (RFC 3396)
// and joined again on parse.
type Option struct {
	Code OptionCode
	Data []byte
}

// Options keep the order they were received or set in. A packet has a
// dozen or so, so a linear scan beats a map and allocates nothing.
type Options []Option

// Get returns the data of the option with code, and whether it is present.
func (o Options) Get(code OptionCode) ([]byte, bool) {
	for i := range o {
		if o[i].Code == code {
			return o[i].Data, true
		}
	}
	return nil, false
}

// Has reports whether the option with code is present.
func (o Options) Has(code OptionCode) bool {
	_, ok := o.Get(code)
	return ok
}

// Set replaces the option with code, or appends it. Data is kept, not
// copied.
func (o *Options) Set(code OptionCode, data []byte) {
	for i := range *o {
		if (*o)[i].Code == code {
			(*o)[i].Data = data
			return
		}
	}
	*o = append(*o, Option{Code: code, Data: data})
}

// Del removes the option with code.
func (o *Options) Del(code OptionCode) {
	for i := range *o {
		if (*o)[i].Code == code {
			*o = append((*o)[:i], (*o)[i+1:]...)
			return
		}
	}
}

// IP returns the first IPv4 address of an address option.
func (o Options) IP(code OptionCode) (netip.Addr, bool) {
	d, ok := o.Get(code)
	if !ok || len(d) < 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(d[:4])), true
}

// IPs returns every IPv4 address of an address list option (3, 6, …).
func (o Options) IPs(code OptionCode) []netip.Addr {
	d, _ := o.Get(code)
	var ips []netip.Addr
	for ; len(d) >= 4; d = d[4:] {
		ips = append(ips, netip.AddrFrom4([4]byte(d[:4])))
	}
	return ips
}

// Uint32 returns a 32-bit option such as the lease time.
func (o Options) Uint32(code OptionCode) (uint32, bool) {
	d, ok := o.Get(code)
	if !ok || len(d) < 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(d), true
}

// Uint16 returns a 16-bit option such as the maximum message size.
func (o Options) Uint16(code OptionCode) (uint16, bool) {
	d, ok := o.Get(code)
	if !ok || len(d) < 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(d), true
}

// String returns a text option without trailing NULs, which some clients
// send.
func (o Options) String(code OptionCode) string {
	d, _ := o.Get(code)
	for len(d) > 0 && d[len(d)-1] == 0 {
		d = d[:len(d)-1]
	}
	return string(d)
}

// MessageType returns option 53, or 0 when it is missing (a BOOTP packet).
func (o Options) MessageType() MessageType {
	d, ok := o.Get(OptMessageType)
	if !ok || len(d) != 1 {
		return 0
	}
	return MessageType(d[0])
}

// LeaseTime returns option 51.
func (o Options) LeaseTime() (time.Duration, bool) {
	v, ok := o.Uint32(OptLeaseTime)
	return time.Duration(v) * time.Second, ok
}

// ClientArch returns the first architecture of option 93 (RFC 4578: 0 is
// BIOS x86, 6 EFI IA32, 7 and 9 EFI x86-64, 11 EFI arm64, 16 EFI x86-64
// HTTP, …; IANA keeps the list).
func (o Options) ClientArch() (uint16, bool) { return o.Uint16(OptClientArch) }

// ClientUUID returns the machine UUID of option 97 (type 0 and 16 bytes),
// formatted the way the machine itself reports it (dmidecode, /sys): PXE
// firmware and iPXE send it in EFI byte order, the first three fields
// little-endian.
func (o Options) ClientUUID() (string, bool) {
	d, ok := o.Get(OptClientMachineID)
	if !ok || len(d) != 17 || d[0] != 0 {
		return "", false
	}
	u := d[1:]
	const hex = "0123456789abcdef"
	var s [36]byte
	order := [16]int{3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15}
	j := 0
	for i, k := range order {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hex[u[k]>>4], hex[u[k]&0xf]
		j += 2
	}
	return string(s[:]), true
}

// UserClasses returns option 77. RFC 3004 makes it a list of
// length-prefixed strings, but iPXE and some firmware send one bare
// string ("iPXE"); both are understood.
func (o Options) UserClasses() []string {
	d, ok := o.Get(OptUserClass)
	if !ok || len(d) == 0 {
		return nil
	}
	var list []string
	for rest := d; len(rest) > 0; {
		n := int(rest[0])
		if n == 0 || n+1 > len(rest) {
			return []string{strings.TrimRight(string(d), "\x00")}
		}
		list = append(list, string(rest[1:1+n]))
		rest = rest[1+n:]
	}
	return list
}

// ParamRequestList returns option 55.
func (o Options) ParamRequestList() []OptionCode {
	d, _ := o.Get(OptParamRequest)
	codes := make([]OptionCode, len(d))
	for i, c := range d {
		codes[i] = OptionCode(c)
	}
	return codes
}

// Requested reports whether the client listed code in option 55.
func (o Options) Requested(code OptionCode) bool {
	d, _ := o.Get(OptParamRequest)
	for _, c := range d {
		if OptionCode(c) == code {
			return true
		}
	}
	return false
}

// PXE vendor sub-options carried in option 43 (PXE 2.1 specification,
// section 2.4).
const (
	PXEDiscoveryControl = 6
	PXEBootItem         = 71
	PXEEnd              = 255
)

// PXE discovery control bits. Hearth sets "use the boot file name in the
// offer" so the firmware downloads it rather than running a boot server
// discovery or a menu.
const (
	PXEDisableBroadcast = 1 << 0
	PXEDisableMulticast = 1 << 1
	PXEOnlyListed       = 1 << 2
	PXEUseBootFile      = 1 << 3
)

// SubOptions parses an encapsulated option (43, 175) into its sub-options.
// It returns nil when the data is not well-formed.
func SubOptions(data []byte) Options {
	var subs Options
	for i := 0; i < len(data); {
		code := data[i]
		switch code {
		case 0:
			i++
			continue
		case 255:
			return subs
		}
		if i+1 >= len(data) || i+2+int(data[i+1]) > len(data) {
			return nil
		}
		n := int(data[i+1])
		subs = append(subs, Option{Code: OptionCode(code), Data: data[i+2 : i+2+n : i+2+n]})
		i += 2 + n
	}
	return subs
}
