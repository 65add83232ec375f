package dataplane

import (
	"crypto/sha256"
	"encoding/base32"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Every name and MAC the data plane gives anything is made here. The
// names are how a Plane recognises what is Hearth's on a host it starts
// on (adoption) and what it may remove (nothing else is touched): links
// named by the patterns below, namespaces named by Config.NetnsPrefix,
// and nftables tables named hearth-*.

const (
	// MaxVNI is the largest VXLAN network identifier (24 bits).
	MaxVNI = 1<<24 - 1

	// VXLAN's encapsulation: outer Ethernet 14, IP 20 (or 40), UDP 8 and
	// VXLAN 8 bytes.
	vxlanOverhead4 = 50
	vxlanOverhead6 = 70

	minMTU = 576 // the least an IPv4 host must accept; 1280 for IPv6 subnets
	maxMTU = 9000

	// Linux's IFNAMSIZ less the terminating NUL.
	maxLinkName = 15
)

// Host link names: a fixed prefix and the network's VNI in decimal, at
// most 3+8 characters. The router namespace's end of its legs have fixed
// names: the namespace holds nothing else.
const (
	bridgePrefix   = "hbr" // the network's bridge
	vxlanPrefix    = "hvx" // its VXLAN device
	routerPrefix   = "hri" // host end of the router's internal leg (on the bridge)
	externalPrefix = "hre" // host end of the router's external leg (on External.Device)
	portPrefix     = "ht"  // ports: PortName

	internalLink = "internal" // the router's leg on the network, holding the gateways
	externalLink = "external" // the router's leg on the external network

	// nftables tables: hostTable (bridge family, host namespace; see
	// l2.go) and routerTable (inet family, in each router namespace: NAT
	// and the external leg's filter).
	hostTable   = "hearth-host"
	routerTable = "hearth-router"

	// DefaultNetnsPrefix starts the names of router namespaces.
	DefaultNetnsPrefix = "hearth-"
	routerNetnsInfix   = "router-"
)

func bridgeName(vni uint32) string                 { return bridgePrefix + strconv.FormatUint(uint64(vni), 10) }
func vxlanName(vni uint32) string                  { return vxlanPrefix + strconv.FormatUint(uint64(vni), 10) }
func routerLink(vni uint32) string                 { return routerPrefix + strconv.FormatUint(uint64(vni), 10) }
func externalLeg(vni uint32) string                { return externalPrefix + strconv.FormatUint(uint64(vni), 10) }
func routerNetns(prefix string, vni uint32) string { return RouterNetnsName(prefix, vni) }

// RouterInternalLink is the name, inside a router namespace, of the
// router's leg on the network's bridge: the link that holds the subnets'
// gateways, where the network's DHCP server listens.
const RouterInternalLink = internalLink

// RouterNetnsName is the name of a network's router namespace for a
// Plane whose Config.NetnsPrefix is prefix.
func RouterNetnsName(prefix string, vni uint32) string {
	return prefix + routerNetnsInfix + strconv.FormatUint(uint64(vni), 10)
}

// portHashLen characters of base32 follow portPrefix in a port's name.
const portHashLen = maxLinkName - len(portPrefix)

var portEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// PortName is the host device name of a NIC: "ht" and 13 characters of a
// hash of key, which should say which NIC it is for good (a VM's uid and
// the NIC's index, say). It fits Linux's 15 characters whatever the key,
// does not collide in practice (65 bits), and tells a Plane it is
// Hearth's.
func PortName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return portPrefix + strings.ToLower(portEncoding.EncodeToString(sum[:]))[:portHashLen]
}

// IsPortName reports whether name is one PortName makes.
func IsPortName(name string) bool {
	if len(name) != maxLinkName || !strings.HasPrefix(name, portPrefix) {
		return false
	}
	for _, c := range name[len(portPrefix):] {
		if !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

// Kinds of links a Plane owns.
const (
	kindBridge   = "bridge"
	kindVXLAN    = "vxlan"
	kindRouter   = "router"
	kindExternal = "external"
	kindPort     = "port"
)

// ownedLink tells whether a host link name is one a Plane makes, which
// kind, and for network links their VNI (ports say nothing about theirs).
func ownedLink(name string) (vni uint32, kind string, ok bool) {
	if IsPortName(name) {
		return 0, kindPort, true
	}
	for _, k := range []struct{ prefix, kind string }{
		{bridgePrefix, kindBridge}, {vxlanPrefix, kindVXLAN}, {routerPrefix, kindRouter}, {externalPrefix, kindExternal},
	} {
		rest, found := strings.CutPrefix(name, k.prefix)
		if !found {
			continue
		}
		if v, ok := parseVNI(rest); ok {
			return v, k.kind, true
		}
	}
	return 0, "", false
}

// parseVNI parses a VNI as the names above write it: decimal, no sign, no
// leading zero.
func parseVNI(s string) (uint32, bool) {
	if s == "" || s[0] == '0' || len(s) > 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 0 || v > MaxVNI {
		return 0, false
	}
	return uint32(v), true
}

// routerNetnsVNI parses a router namespace's name.
func routerNetnsVNI(prefix, name string) (uint32, bool) {
	rest, ok := strings.CutPrefix(name, prefix+routerNetnsInfix)
	if !ok {
		return 0, false
	}
	return parseVNI(rest)
}

// MACs. All are locally administered unicast addresses (second-lowest bit
// of the first byte set, lowest clear) in ranges a NIC may not use
// (validNICMAC), apart from QEMU's 52:54:00 that Hearth gives VMs.
const reservedMACRanges = "02:68:62, 02:68:67 and 06:68"

// GatewayMAC is the MAC of a network's gateways, the same on every host
// so a VM keeps its gateway's MAC wherever it runs: 02:68:67 ("hg") and
// the VNI.
func GatewayMAC(vni uint32) net.HardwareAddr {
	return net.HardwareAddr{0x02, 'h', 'g', byte(vni >> 16), byte(vni >> 8), byte(vni)}
}

// bridgeMAC is set on the bridge so its address does not follow its
// ports as they come and go.
func bridgeMAC(vni uint32) net.HardwareAddr {
	return net.HardwareAddr{0x02, 'h', 'b', byte(vni >> 16), byte(vni >> 8), byte(vni)}
}

// RoutedMAC is the source MAC of frames a host's routers send across the
// VXLAN: the gateway MAC is the same on every host and must not be
// learned on the VXLAN port, so the l2 table rewrites it to this, which
// is unique per host: 06:68 and the host's IPv4 underlay address (or four
// bytes of a hash of an IPv6 one).
func RoutedMAC(underlay netip.Addr) net.HardwareAddr {
	var b [4]byte
	if underlay.Is4() {
		b = underlay.As4()
	} else {
		sum := sha256.Sum256(underlay.AsSlice())
		copy(b[:], sum[:])
	}
	return net.HardwareAddr{0x06, 'h', b[0], b[1], b[2], b[3]}
}

// externalMAC is the router's external leg's MAC: stable across
// re-creation, so the external network's ARP caches stay right after a
// repair, and different per host and network.
func externalMAC(underlay netip.Addr, vni uint32) net.HardwareAddr {
	sum := sha256.Sum256(append(underlay.AsSlice(), byte(vni>>16), byte(vni>>8), byte(vni)))
	return net.HardwareAddr{0x0a, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

func reservedMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && (mac[0] == 0x02 && mac[1] == 'h' && (mac[2] == 'g' || mac[2] == 'b') || mac[0] == 0x06 && mac[1] == 'h')
}

// ExternalMAC is the MAC of network vni's router's external leg on the
// host with this underlay address (its IPv6 address there is the
// EUI-64 of it).
func ExternalMAC(underlay netip.Addr, vni uint32) net.HardwareAddr { return externalMAC(underlay, vni) }

// BridgeName is the name of the bridge of network vni on a host: gone
// from the host once the host no longer carries the network.
func BridgeName(vni uint32) string { return bridgeName(vni) }
