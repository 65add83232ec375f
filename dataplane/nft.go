package dataplane

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A table is written whole, in one nftables transaction (delete and
// re-create), whenever its rules differ from the wanted ones: packets see
// the old rules or the new, never none. Each rule carries an id in its
// user data (a short name and a hash of its expressions), which is how a
// Plane compares what is there with what it wants without parsing rules
// back.

type nftChain struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
}

type nftRule struct {
	chain string
	name  string
	exprs []expr.Any
}

// id is the rule's identity: its name and a hash of what it does.
func (r nftRule) id(family nftables.TableFamily) string {
	h := sha256.New()
	for _, e := range r.exprs {
		b, err := expr.Marshal(byte(family), e)
		if err != nil {
			panic(fmt.Sprintf("dataplane: marshalling rule %s: %v", r.name, err))
		}
		h.Write(b)
	}
	return r.chain + "/" + r.name + "#" + hex.EncodeToString(h.Sum(nil)[:6])
}

type nftTable struct {
	name   string
	family nftables.TableFamily
	chains []nftChain
	rules  []nftRule
}

func (t *nftTable) ids() []string {
	if t == nil {
		return nil
	}
	ids := make([]string, 0, len(t.rules)+1)
	// The chains are part of the identity: a table missing one is wrong
	// even if it had no rules.
	for _, c := range t.chains {
		ids = append(ids, "chain:"+c.name)
	}
	for _, c := range t.chains {
		for _, r := range t.rules {
			if r.chain == c.name {
				ids = append(ids, r.id(t.family))
			}
		}
	}
	return ids
}

func ruleIDs(t *nftTable) []string { return t.ids() }

// readTable returns the ids of the table's chains and rules, in the form
// ids gives, or nil if the table does not exist. chains are the ones
// expected: a chain that is missing leaves its "chain:" id out.
func readTable(c *nftables.Conn, name string, family nftables.TableFamily, chains []nftChain) ([]string, error) {
	t, err := c.ListTableOfFamily(name, family)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || t == nil {
			return nil, nil
		}
		return nil, fmt.Errorf("reading nftables table %s: %w", name, err)
	}
	ids := []string{}
	var present []nftChain
	for _, ch := range chains {
		if _, err := c.ListChain(t, ch.name); err != nil {
			continue
		}
		ids = append(ids, "chain:"+ch.name)
		present = append(present, ch)
	}
	for _, ch := range present {
		rules, err := c.GetRules(t, &nftables.Chain{Name: ch.name, Table: t})
		if err != nil {
			return nil, fmt.Errorf("reading nftables chain %s %s: %w", name, ch.name, err)
		}
		for _, r := range rules {
			ids = append(ids, string(r.UserData))
		}
	}
	return ids, nil
}

// writeTable replaces the table with t in one transaction; with
// t.rules and t.chains empty and remove set, it deletes it.
func writeTable(c *nftables.Conn, t *nftTable) error {
	tab := &nftables.Table{Name: t.name, Family: t.family}
	// Adding first makes the delete succeed whether or not it existed.
	c.AddTable(tab)
	c.DelTable(tab)
	c.AddTable(tab)
	chains := map[string]*nftables.Chain{}
	for _, ch := range t.chains {
		accept := nftables.ChainPolicyAccept
		chains[ch.name] = c.AddChain(&nftables.Chain{
			Name: ch.name, Table: tab, Type: ch.typ, Hooknum: ch.hook, Priority: ch.priority, Policy: &accept,
		})
	}
	for _, ch := range t.chains {
		for _, r := range t.rules {
			if r.chain != ch.name {
				continue
			}
			c.AddRule(&nftables.Rule{Table: tab, Chain: chains[ch.name], Exprs: r.exprs, UserData: []byte(r.id(t.family))})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables table %s: %w", t.name, err)
	}
	return nil
}

// deleteTable removes a table if it exists.
func deleteTable(c *nftables.Conn, name string, family nftables.TableFamily) error {
	tab := &nftables.Table{Name: name, Family: family}
	c.AddTable(tab)
	c.DelTable(tab)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting nftables table %s: %w", name, err)
	}
	return nil
}

var (
	l2Chains = []nftChain{
		{name: "vxlan", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: nftables.ChainPriorityFilter},
	}
	hostChains = []nftChain{
		{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, priority: nftables.ChainPriorityFilter},
		{name: "output", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookOutput, priority: nftables.ChainPriorityFilter},
	}
	routerChains = []nftChain{
		{name: "prerouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, priority: nftables.ChainPriorityNATDest},
		{name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, priority: nftables.ChainPriorityNATSource},
		{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: nftables.ChainPriorityFilter},
		{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, priority: nftables.ChainPriorityFilter},
	}
)

// l2Rules is the network's l2 table: what must not cross its VXLAN
// device, so that every host serves its own VMs.
//
//   - The gateway MAC stays on the host: frames to it never leave (the
//     bridge also pins it to the router's port), frames from it (the
//     router's ARP, neighbour discovery and multicast) never leave, and
//     frames from another host claiming it are dropped. Routed packets do
//     cross, to reach VMs on other hosts: their source MAC is rewritten
//     to this host's RoutedMAC on the way out, so no bridge ever learns
//     the gateway MAC behind its VXLAN port.
//   - ARP for a gateway address is answered by the local router only.
//   - DHCP (v4 and v6) and router solicitations and advertisements stay
//     on the host: the VM's own host answers them.
func l2Rules(n *Network, underlay netip.Addr) *nftTable {
	vx := vxlanName(n.VNI)
	gw := GatewayMAC(n.VNI)
	out := func(parts ...[]expr.Any) []expr.Any {
		return cat(append([][]expr.Any{ifname(expr.MetaKeyOIFNAME, vx)}, parts...)...)
	}
	in := func(parts ...[]expr.Any) []expr.Any {
		return cat(append([][]expr.Any{ifname(expr.MetaKeyIIFNAME, vx)}, parts...)...)
	}
	var rules []nftRule
	add := func(name string, es []expr.Any) {
		rules = append(rules, nftRule{chain: "vxlan", name: name, exprs: es})
	}
	dropIt := []expr.Any{drop()}

	add("out-to-gateway", out(etherAddr(0, gw), dropIt))
	add("out-gateway-multicast", out(etherAddr(6, gw), etherMulticast(), dropIt))
	add("out-gateway-arp", out(etherAddr(6, gw), etherType(unix.ETH_P_ARP), dropIt))
	add("out-gateway-nd", out(etherAddr(6, gw), etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 133, 137), dropIt))
	routed := RoutedMAC(underlay)
	for _, t := range []struct {
		name string
		typ  uint16
	}{{"out-routed-ip", unix.ETH_P_IP}, {"out-routed-ip6", unix.ETH_P_IPV6}} {
		add(t.name, out(etherAddr(6, gw), etherType(t.typ), []expr.Any{
			&expr.Immediate{Register: 1, Data: routed},
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		}))
	}
	add("out-gateway-other", out(etherAddr(6, gw), dropIt))
	add("in-from-gateway", in(etherAddr(6, gw), dropIt))
	add("in-to-gateway", in(etherAddr(0, gw), dropIt))
	for _, s := range n.Subnets {
		if !s.Gateway.Is4() {
			continue
		}
		add("out-arp-"+s.Gateway.String(), out(etherType(unix.ETH_P_ARP), arpTarget(s.Gateway), dropIt))
		add("in-arp-"+s.Gateway.String(), in(etherType(unix.ETH_P_ARP), arpTarget(s.Gateway), dropIt))
	}
	for _, dir := range []struct {
		name string
		f    func(...[]expr.Any) []expr.Any
	}{{"out", out}, {"in", in}} {
		add(dir.name+"-dhcp", dir.f(etherType(unix.ETH_P_IP), l4(unix.IPPROTO_UDP), transportRange(2, 2, 67, 68), dropIt))
		add(dir.name+"-dhcp6", dir.f(etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_UDP), transportRange(2, 2, 546, 547), dropIt))
		add(dir.name+"-rs-ra", dir.f(etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 133, 134), dropIt))
	}
	return &nftTable{name: l2TableName(n.VNI), family: nftables.TableFamilyBridge, chains: l2Chains, rules: rules}
}

// hostRules keeps every tenant frame from the host itself: a tenant
// bridge has no address, but the kernel would still answer ARP for the
// host's other addresses on it and accept packets sent to the bridge's
// MAC. Frames arriving on a port Hearth made (VXLAN devices, router legs,
// NIC ports) and meant for the host are dropped, and the host sends none
// out of them.
func hostRules() *nftTable {
	var rules []nftRule
	for _, prefix := range []string{vxlanPrefix, routerPrefix, portPrefix} {
		rules = append(rules,
			nftRule{chain: "input", name: "from-" + prefix, exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)}, // a prefix: no NUL
				drop(),
			}},
			nftRule{chain: "output", name: "to-" + prefix, exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)},
				drop(),
			}})
	}
	return &nftTable{name: hostTable, family: nftables.TableFamilyBridge, chains: hostChains, rules: rules}
}

// routerRules is the router's NAT and its external leg's filter, or nil
// for a network without External.
//
// Floating IPs DNAT to their port's address on the way in and SNAT its
// traffic on the way out; everything else leaving by the external leg
// takes the host's external address. Nothing from the external network
// reaches a tenant address that it did not come through a floating IP
// for or that did not answer a connection from inside; the router itself
// answers pings only.
func routerRules(n *Network) *nftTable {
	x := n.External
	if x == nil {
		return nil
	}
	var rules []nftRule
	add := func(chain, name string, es ...expr.Any) {
		rules = append(rules, nftRule{chain: chain, name: name, exprs: es})
	}
	for _, f := range n.FloatingIPs {
		add("prerouting", "dnat-"+f.External.String(), cat(ifname(expr.MetaKeyIIFNAME, externalLink), ipv4(), ipAddr(16, f.External), nat(expr.NATTypeDestNAT, f.Internal))...)
		add("postrouting", "snat-"+f.External.String(), cat(ifname(expr.MetaKeyOIFNAME, externalLink), ipv4(), ipAddr(12, f.Internal), nat(expr.NATTypeSourceNAT, f.External))...)
	}
	add("postrouting", "snat", cat(ifname(expr.MetaKeyOIFNAME, externalLink), ipv4(), nat(expr.NATTypeSourceNAT, x.Address.Addr()))...)

	ext := ifname(expr.MetaKeyIIFNAME, externalLink)
	add("forward", "established", cat(ext, ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), []expr.Any{accept()})...)
	add("forward", "floating", cat(ext, ctBits(expr.CtKeySTATUS, ipsDstNAT), []expr.Any{accept()})...)
	add("forward", "other", append(ext, drop())...)
	add("input", "established", cat(ext, ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), []expr.Any{accept()})...)
	add("input", "ping", cat(ext, ipv4(), l4(unix.IPPROTO_ICMP), transportRange(0, 1, 8, 8), []expr.Any{accept()})...)
	add("input", "other", append(ext, drop())...)
	return &nftTable{name: routerTable, family: nftables.TableFamilyINet, chains: routerChains, rules: rules}
}

// IPS_DST_NAT: the connection's destination was translated.
const ipsDstNAT = 1 << 5

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }
func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

// ifname matches a whole interface name, as nft does: the name padded
// with NULs to IFNAMSIZ.
func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// etherAddr matches the Ethernet destination (offset 0) or source (6).
func etherAddr(offset uint32, mac net.HardwareAddr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: offset, Len: 6},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(mac)},
	}
}

func etherMulticast() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{1}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
	}
}

func etherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, t)},
	}
}

// arpTarget matches an Ethernet/IPv4 ARP packet's target address.
func arpTarget(a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
	}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// transportRange matches a big-endian field of the transport header
// (1 or 2 bytes) within [from, to].
func transportRange(offset, length uint32, from, to uint16) []expr.Any {
	enc := func(v uint16) []byte {
		if length == 1 {
			return []byte{byte(v)}
		}
		return binary.BigEndian.AppendUint16(nil, v)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: length},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: enc(from), ToData: enc(to)},
	}
}

func ipv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// ipAddr matches the IPv4 source (offset 12) or destination (16).
func ipAddr(offset uint32, a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
	}
}

func nat(t expr.NATType, to netip.Addr) []expr.Any {
	b := to.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: b[:]},
		&expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1},
	}
}

// ctBits matches a conntrack state or status with any of bits set.
func ctBits(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}
