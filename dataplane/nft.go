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
	routerChains = []nftChain{
		{name: "prerouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, priority: nftables.ChainPriorityNATDest},
		{name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, priority: nftables.ChainPriorityNATSource},
		{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: nftables.ChainPriorityFilter},
		{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, priority: nftables.ChainPriorityFilter},
	}
)

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
	if x6 := x.IPv6; x6 != nil {
		// IPv6 is routed, not NATed: the routed subnets are open to the
		// outside (their ports' security groups decide) and leave with
		// their own addresses; other IPv6 does not cross.
		out := ifname(expr.MetaKeyOIFNAME, externalLink)
		for _, p := range x6.Routed {
			add("forward", "in6-"+p.String(), cat(ext, ipv6(), ip6Prefix(24, p), []expr.Any{accept()})...)
			add("forward", "out6-"+p.String(), cat(out, ipv6(), ip6Prefix(8, p), []expr.Any{accept()})...)
		}
		add("forward", "out6-other", cat(out, ipv6(), []expr.Any{drop()})...)
		// Neighbour discovery on the link (solicitations and
		// advertisements, the router's own and those it proxies), and
		// ping of the router.
		add("input", "nd6", cat(ext, ipv6(), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 135, 136), []expr.Any{accept()})...)
		add("input", "ping6", cat(ext, ipv6(), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 128, 128), []expr.Any{accept()})...)
	}
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

// ip6Prefix matches the IPv6 source (offset 8) or destination (24)
// against a prefix.
func ip6Prefix(offset uint32, p netip.Prefix) []expr.Any {
	a := p.Masked().Addr().As16()
	mask := net.CIDRMask(p.Bits(), 128)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
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
