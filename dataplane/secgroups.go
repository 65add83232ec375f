package dataplane

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// Security groups: stateful allow rules per port, enforced on the host
// the port is on, in the table hearth-sg (inet family, host namespace).
//
// Where: a VM's traffic meets the host in three ways (to another VM on
// the same bridge, to the router, in from the VXLAN device), and only the
// bridge sees all three: two VMs on one host in one subnet talk without
// the router. So rules are enforced where the bridge forwards, and they
// must be stateful, which needs connection tracking of bridged packets.
// The bridge family has none on this kernel (nf_conntrack_bridge is not
// built), so bridged IP packets are handed to the inet hooks by the
// kernel's bridge netfilter (each tenant bridge with filtered ports gets
// nf_call_iptables and nf_call_ip6tables; br_netfilter must be present,
// and Apply says so when it is not), and this table filters them there:
//
//   - chain zone (prerouting, before conntrack): every packet of a tenant
//     bridge is tracked in a conntrack zone of its own network
//     (ConntrackZone), so two tenants using the same addresses never
//     share a connection, and one's traffic is never "established" by the
//     other's;
//   - chain forward: established and related packets pass first (a rule
//     change never breaks a connection its rules still allow, and
//     replies need no rules), then a verdict map keyed by the bridge jumps
//     to the network's chain, which looks the frame's Ethernet source up
//     in the network's egress map and its destination in the ingress
//     map: a port is known by its MAC, which anti-spoofing makes
//     trustworthy. So a packet costs two lookups whatever the host
//     carries, plus the rules of the two ports it is between.
//   - chains eg-PORT and in-PORT: the port's rules, each returning (so
//     both ends' rules are checked when two filtered VMs on one host
//     talk), then a drop. A port without egress rules has no eg- chain:
//     everything goes out. DHCP, DHCPv6 and neighbour discovery always
//     pass (anti-spoofing already keeps servers' answers from VMs), and
//     so do a port's requests to its network's own services: DNS on the
//     gateways, metadata at MetadataAddress.
//   - remote groups are named sets of addresses, g-HASH-4 and g-HASH-6,
//     shared by every rule that names the group.
//
// The table is written whole, in one transaction, when anything in it
// changes: packets see the old rules or the new, never a mix. Conntrack
// entries are not the table's, so connections outlive the rewrite.
// Broadcast and multicast IP cannot be matched here by the port they go
// to (the inet hooks know the bridge, not the port), so hostTable keeps
// them from filtered ports (antispoof.go's broadcastRules): only ARP,
// DHCP's answers, neighbour discovery and MLD reach them.

const sgTable = "hearth-sg"

// MetadataAddress is where a network's VMs find the metadata service (in
// their router): a port's egress rules always let it through, as they do
// DHCP, neighbour discovery and DNS to the subnets' gateways.
var MetadataAddress = netip.AddrFrom4([4]byte{169, 254, 169, 254})

// MetadataAddress6 is the metadata service's IPv6 address, as on AWS and
// OpenStack: link-local, on every router's internal leg of a network
// with IPv6 (the guest asks [fe80::a9fe:a9fe%eth0]).
var MetadataAddress6 = netip.MustParseAddr("fe80::a9fe:a9fe")

// PortSecurity is what a port's security groups allow, as rules on its
// host. With it, new traffic into the port passes only if an Ingress rule
// allows it; traffic out passes if Egress is empty or a rule allows it.
// Replies to allowed traffic always pass.
type PortSecurity struct {
	Ingress []SecurityRule
	Egress  []SecurityRule
}

// SecurityRule allows one kind of traffic, to or from the port.
type SecurityRule struct {
	// Protocol: tcp, udp, icmp (ICMP and ICMPv6), or empty for any.
	Protocol string
	// FromPort and ToPort bound the destination port (tcp and udp);
	// zero for every port.
	FromPort, ToPort uint16
	// CIDR is where the traffic comes from (ingress) or goes to
	// (egress). With neither CIDR nor Group: anywhere.
	CIDR netip.Prefix
	// Group instead names one of HostState.AddressGroups: its addresses.
	Group string
}

// AddressGroup is a set of addresses rules name: the NICs of a remote
// security group, wherever they are.
type AddressGroup struct {
	Name      string
	Addresses []netip.Addr
}

// ConntrackZone is the conntrack zone a network's bridged packets are
// tracked in on a host. Zones have 16 bits, VNIs 24: networks whose VNIs
// differ by a multiple of 65535 share one, which Validate refuses on
// one host.
func ConntrackZone(vni uint32) uint16 { return uint16(1 + (vni-1)%65535) }

// validateSecurity checks the ports' security and the address groups.
func (s *HostState) validateSecurity() FieldErrors {
	var es FieldErrors
	groups := map[string]bool{}
	for i, g := range s.AddressGroups {
		gp := index("addressGroups", i)
		if g.Name == "" {
			es.add(gp+".name", "is required")
		} else if groups[g.Name] {
			es.add(gp+".name", "%q is listed twice", g.Name)
		}
		groups[g.Name] = true
		for j, a := range g.Addresses {
			if !a.IsValid() {
				es.add(index(gp+".addresses", j), "is not an address")
			}
		}
	}
	zones := map[uint16]int{}
	for i := range s.Networks {
		n := &s.Networks[i]
		np := index("networks", i)
		if n.VNI != 0 {
			z := ConntrackZone(n.VNI)
			if j, dup := zones[z]; dup && s.Networks[j].VNI != n.VNI {
				es.add(np+".vni", "%d has the conntrack zone of networks[%d] (VNI %d): they cannot be on one host", n.VNI, j, s.Networks[j].VNI)
			}
			zones[z] = i
		}
		for j, p := range n.Ports {
			if p.Security == nil {
				continue
			}
			pp := index(np+".ports", j) + ".security"
			for dir, rules := range map[string][]SecurityRule{"ingress": p.Security.Ingress, "egress": p.Security.Egress} {
				for k, r := range rules {
					rp := index(pp+"."+dir, k)
					switch r.Protocol {
					case "", "tcp", "udp", "icmp":
					default:
						es.add(rp+".protocol", "%q is not tcp, udp, icmp or empty (any)", r.Protocol)
					}
					if r.FromPort != 0 || r.ToPort != 0 {
						if r.Protocol != "tcp" && r.Protocol != "udp" {
							es.add(rp+".fromPort", "only tcp and udp have ports")
						} else if r.FromPort == 0 || r.ToPort < r.FromPort {
							es.add(rp+".toPort", "%d-%d is not a port range", r.FromPort, r.ToPort)
						}
					}
					if r.CIDR.IsValid() && r.Group != "" {
						es.add(rp+".group", "cannot be set with cidr")
					}
					if r.CIDR.IsValid() && r.CIDR.Masked() != r.CIDR {
						es.add(rp+".cidr", "%s has host bits set", r.CIDR)
					}
					if r.Group != "" && !groups[r.Group] {
						es.add(rp+".group", "%q is not one of addressGroups", r.Group)
					}
				}
			}
		}
	}
	return es
}

func filtered(n *Network) bool {
	for _, p := range n.Ports {
		if p.Security != nil {
			return true
		}
	}
	return false
}

func egressChain(port string) string  { return "eg-" + port }
func ingressChain(port string) string { return "in-" + port }
func netSGChain(vni uint32) string    { return "net-" + vniString(vni) }
func egressMap(vni uint32) string     { return "egress-" + vniString(vni) }
func ingressMap(vni uint32) string    { return "ingress-" + vniString(vni) }

const sgNetsMap = "nets"

// groupSet names a group's set of one address family.
func groupSet(name string, v6 bool) string {
	h := sha256.Sum256([]byte(name))
	if v6 {
		return "g-" + hex.EncodeToString(h[:6]) + "-6"
	}
	return "g-" + hex.EncodeToString(h[:6]) + "-4"
}

// sgSet is a named set or verdict map of the table, with its elements.
type sgSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
	// desc is the elements as text, for the table's digest.
	desc []string
}

// sgModel is the whole table: chains and rules, and its sets and maps.
type sgModel struct {
	table *nftTable
	sets  []sgSet
}

// ids are the table's identity as readTable reads it back: the chains'
// and rules' ids, the last rule being the digest of the sets and maps.
func (m *sgModel) ids() []string { return m.table.ids() }

var sgBaseChains = []nftChain{
	{name: "zone", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, priority: nftables.ChainPriorityRaw},
	{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: nftables.ChainPriorityFilter},
}

// sgRules computes the table for a normalized state, or nil when the
// host carries no network.
func sgRules(s *HostState) *sgModel {
	if len(s.Networks) == 0 {
		return nil
	}
	tab := &nftables.Table{Name: sgTable, Family: nftables.TableFamilyINet}
	t := &nftTable{name: sgTable, family: nftables.TableFamilyINet, chains: slices.Clone(sgBaseChains)}
	m := &sgModel{table: t}
	add := func(chain, name string, parts ...[]expr.Any) {
		t.rules = append(t.rules, nftRule{chain: chain, name: name, exprs: cat(parts...)})
	}
	pass := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	dropIt := []expr.Any{drop()}

	nets := sgSet{set: &nftables.Set{Table: tab, Name: sgNetsMap, IsMap: true, KeyType: nftables.TypeIFName,
		DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}}
	for _, n := range s.Networks {
		zone := binary.NativeEndian.AppendUint16(nil, ConntrackZone(n.VNI))
		add("zone", "zone-"+vniString(n.VNI), ifname(expr.MetaKeyIIFNAME, bridgeName(n.VNI)),
			[]expr.Any{&expr.Immediate{Register: 1, Data: zone}, &expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true}})
	}
	add("forward", "established", ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), []expr.Any{accept()})
	add("forward", "dispatch", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: sgNetsMap, IsDestRegSet: true, DestRegister: 0},
	})

	groups := map[string]bool{}
	for _, n := range s.Networks {
		if !filtered(&n) {
			continue
		}
		nc := netSGChain(n.VNI)
		t.chains = append(t.chains, nftChain{name: nc})
		nets.elems = append(nets.elems, nftables.SetElement{Key: ifnameKey(bridgeName(n.VNI)), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: nc}})
		nets.desc = append(nets.desc, bridgeName(n.VNI)+">"+nc)
		eg := sgSet{set: &nftables.Set{Table: tab, Name: egressMap(n.VNI), IsMap: true, KeyType: nftables.TypeEtherAddr, DataType: nftables.TypeVerdict}}
		in := sgSet{set: &nftables.Set{Table: tab, Name: ingressMap(n.VNI), IsMap: true, KeyType: nftables.TypeEtherAddr, DataType: nftables.TypeVerdict}}
		for _, at := range []struct {
			offset uint32
			set    string
		}{{6, eg.set.Name}, {0, in.set.Name}} {
			add(nc, "lookup-"+at.set, []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: at.offset, Len: 6},
				&expr.Lookup{SourceRegister: 1, SetName: at.set, IsDestRegSet: true, DestRegister: 0},
			})
		}
		for _, p := range n.Ports {
			sec := p.Security
			if sec == nil {
				continue
			}
			if len(sec.Egress) > 0 {
				ch := egressChain(p.Name)
				t.chains = append(t.chains, nftChain{name: ch})
				eg.elems = append(eg.elems, nftables.SetElement{Key: slices.Clone([]byte(p.MAC)), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch}})
				eg.desc = append(eg.desc, p.MAC.String()+">"+ch)
				add(ch, "dhcp", ipv4(), l4(unix.IPPROTO_UDP), transportRange(2, 2, 67, 67), pass)
				add(ch, "dhcp6", ipv6(), l4(unix.IPPROTO_UDP), transportRange(2, 2, 547, 547), pass)
				add(ch, "nd", ipv6(), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 133, 136), pass)
				// The network's own services: DNS on the gateways and
				// metadata, which the router serves.
				for _, sn := range n.Subnets {
					gw := sn.Gateway
					var dst, fam []expr.Any
					if gw.Is6() {
						b := gw.As16()
						dst, fam = nhCmp(24, b[:], expr.CmpOpEq), ipv6()
					} else {
						dst, fam = ipAddr(16, gw), ipv4()
					}
					add(ch, "dns-udp-"+gw.String(), fam, dst, l4(unix.IPPROTO_UDP), transportRange(2, 2, 53, 53), pass)
					add(ch, "dns-tcp-"+gw.String(), fam, dst, l4(unix.IPPROTO_TCP), transportRange(2, 2, 53, 53), pass)
				}
				add(ch, "metadata", ipv4(), ipAddr(16, MetadataAddress), l4(unix.IPPROTO_TCP), transportRange(2, 2, 80, 80), pass)
				md6 := MetadataAddress6.As16()
				add(ch, "metadata6", ipv6(), nhCmp(24, md6[:], expr.CmpOpEq), l4(unix.IPPROTO_TCP), transportRange(2, 2, 80, 80), pass)
				for i, r := range sec.Egress {
					for _, rule := range ruleExprs(r, false) {
						add(ch, "rule-"+strconv.Itoa(i)+rule.suffix, rule.exprs, pass)
					}
					if r.Group != "" {
						groups[r.Group] = true
					}
				}
				add(ch, "other", dropIt)
			}
			ch := ingressChain(p.Name)
			t.chains = append(t.chains, nftChain{name: ch})
			in.elems = append(in.elems, nftables.SetElement{Key: slices.Clone([]byte(p.MAC)), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: ch}})
			in.desc = append(in.desc, p.MAC.String()+">"+ch)
			add(ch, "dhcp", ipv4(), l4(unix.IPPROTO_UDP), transportRange(0, 2, 67, 67), transportRange(2, 2, 68, 68), pass)
			add(ch, "dhcp6", ipv6(), l4(unix.IPPROTO_UDP), transportRange(0, 2, 547, 547), transportRange(2, 2, 546, 546), pass)
			add(ch, "nd", ipv6(), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 133, 137), pass)
			for i, r := range sec.Ingress {
				for _, rule := range ruleExprs(r, true) {
					add(ch, "rule-"+strconv.Itoa(i)+rule.suffix, rule.exprs, pass)
				}
				if r.Group != "" {
					groups[r.Group] = true
				}
			}
			add(ch, "other", dropIt)
		}
		m.sets = append(m.sets, eg, in)
	}
	m.sets = append([]sgSet{nets}, m.sets...)
	for _, g := range s.AddressGroups {
		if !groups[g.Name] {
			continue
		}
		s4 := sgSet{set: &nftables.Set{Table: tab, Name: groupSet(g.Name, false), KeyType: nftables.TypeIPAddr}}
		s6 := sgSet{set: &nftables.Set{Table: tab, Name: groupSet(g.Name, true), KeyType: nftables.TypeIP6Addr}}
		for _, a := range sortedAddrs(g.Addresses) {
			if a.Is4() {
				s4.elems = append(s4.elems, nftables.SetElement{Key: a.AsSlice()})
				s4.desc = append(s4.desc, a.String())
			} else {
				s6.elems = append(s6.elems, nftables.SetElement{Key: a.AsSlice()})
				s6.desc = append(s6.desc, a.String())
			}
		}
		m.sets = append(m.sets, s4, s6)
	}
	// The digest of the sets and maps, as the name of a rule: what
	// readTable reads back then covers them too.
	h := sha256.New()
	for _, st := range m.sets {
		fmt.Fprintf(h, "%s:%s\n", st.set.Name, strings.Join(st.desc, ","))
	}
	t.chains = append(t.chains, nftChain{name: "digest"})
	add("digest", "sets-"+hex.EncodeToString(h.Sum(nil)[:8]), pass)
	return m
}

type ruleMatch struct {
	suffix string
	exprs  []expr.Any
}

// ruleExprs is a rule's matches, one per address family it needs (a CIDR
// has one family; a group, icmp or ports-only rule may need both).
func ruleExprs(r SecurityRule, ingress bool) []ruleMatch {
	type fam struct {
		v6  bool
		any bool
	}
	var fams []fam
	switch {
	case r.CIDR.IsValid():
		fams = []fam{{v6: r.CIDR.Addr().Is6()}}
	case r.Group != "" || r.Protocol == "icmp":
		fams = []fam{{v6: false}, {v6: true}}
	default:
		fams = []fam{{any: true}}
	}
	var out []ruleMatch
	for _, f := range fams {
		var parts [][]expr.Any
		suffix := ""
		if !f.any {
			if f.v6 {
				parts = append(parts, ipv6())
				suffix = "-6"
			} else {
				parts = append(parts, ipv4())
				suffix = "-4"
			}
		}
		switch r.Protocol {
		case "tcp":
			parts = append(parts, l4(unix.IPPROTO_TCP))
		case "udp":
			parts = append(parts, l4(unix.IPPROTO_UDP))
		case "icmp":
			if f.v6 {
				parts = append(parts, l4(unix.IPPROTO_ICMPV6))
			} else {
				parts = append(parts, l4(unix.IPPROTO_ICMP))
			}
		}
		if r.FromPort != 0 {
			parts = append(parts, transportRange(2, 2, r.FromPort, r.ToPort))
		}
		// The far end: the source of what comes in, the destination of
		// what goes out.
		var offset, length uint32 = 16, 4
		if ingress {
			offset = 12
		}
		if f.v6 {
			offset, length = 24, 16
			if ingress {
				offset = 8
			}
		}
		switch {
		case r.CIDR.IsValid():
			mask := net.CIDRMask(r.CIDR.Bits(), r.CIDR.Addr().BitLen())
			parts = append(parts, []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: length, Mask: mask, Xor: make([]byte, length)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.CIDR.Addr().AsSlice()},
			})
		case r.Group != "":
			parts = append(parts, []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
				&expr.Lookup{SourceRegister: 1, SetName: groupSet(r.Group, f.v6)},
			})
		}
		out = append(out, ruleMatch{suffix: suffix, exprs: cat(parts...)})
	}
	return out
}

func ipv6() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
	}
}

// writeSG replaces the table with m in one transaction (or deletes it,
// m nil).
func writeSG(c *nftables.Conn, m *sgModel) error {
	if m == nil {
		return deleteTable(c, sgTable, nftables.TableFamilyINet)
	}
	tab := &nftables.Table{Name: sgTable, Family: nftables.TableFamilyINet}
	c.AddTable(tab)
	c.DelTable(tab)
	c.AddTable(tab)
	// Chains, then the sets and maps (whose elements jump to chains),
	// then the rules (which look the sets up).
	for _, ch := range m.table.chains {
		nc := &nftables.Chain{Name: ch.name, Table: tab, Type: ch.typ, Hooknum: ch.hook, Priority: ch.priority}
		if ch.hook != nil {
			accept := nftables.ChainPolicyAccept
			nc.Policy = &accept
		}
		c.AddChain(nc)
	}
	for _, st := range m.sets {
		if err := c.AddSet(st.set, st.elems); err != nil {
			return fmt.Errorf("writing nftables set %s: %w", st.set.Name, err)
		}
	}
	addChainRules(c, tab, m.table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables table %s: %w", sgTable, err)
	}
	return nil
}

// largeSendBuffer (and receive buffer) lets one transaction (one netlink message) hold a whole
// hearth-sg of many thousands of rules: a batch is applied only if it
// arrives whole, and the default socket buffer (about 200 KiB) takes
// about a thousand rules. The host's wmem_max does not bind root
// (SO_SNDBUFFORCE), as with nft itself.
func largeSendBuffer(c *mnl.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		// And the receive buffer, for the kernel's answer to each
		// message of it.
		serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("enlarging the nftables socket's buffers: %w", serr)
	}
	return nil
}

// readSG reads the table's ids back (nil when it does not exist).
func readSG(c *nftables.Conn, want *sgModel) ([]string, error) {
	var chains []nftChain
	if want != nil {
		chains = want.table.chains
	} else {
		chains = sgBaseChains
	}
	return readTable(c, sgTable, nftables.TableFamilyINet, chains)
}

// convergeSG makes hearth-sg what the state says. It goes in before the
// networks are converged, so a new port's rules are in force before its
// link comes up.
func (p *Linux) convergeSG(s *HostState, read bool) error {
	want := sgRules(s)
	var ids []string
	if want != nil {
		ids = want.ids()
	}
	have := p.sgKnown
	if read || p.sgDirty {
		var err error
		if have, err = readSG(p.nft, want); err != nil {
			return err
		}
	}
	if sameIDs(ids, have) {
		p.sgKnown, p.sgDirty = have, false
		return nil
	}
	if err := writeSG(p.nft, want); err != nil {
		p.sgDirty = true
		return err
	}
	p.logf("dataplane: wrote nftables table %s (%d rules)", sgTable, len(ids))
	p.sgKnown, p.sgDirty = ids, false
	return nil
}

// bridgeNetfilter makes a filtered network's bridge hand its IP packets
// to the inet hooks (where hearth-sg is): nf_call_iptables and
// nf_call_ip6tables on the bridge alone, not the host's other bridges.
// It is set whenever the network is converged (one message).
func (p *Linux) bridgeNetfilter(vni uint32) error {
	err := netns.Do(p.host, func() error {
		if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
			return errors.New("security groups need the kernel's bridge netfilter (br_netfilter): modprobe br_netfilter, and add it to /etc/modules-load.d")
		}
		l, err := p.nl.LinkByName(bridgeName(vni))
		if err != nil {
			return err
		}
		req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(l.Attrs().Index)
		req.AddData(msg)
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
		data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
		data.AddRtAttr(nl.IFLA_BR_NF_CALL_IPTABLES, []byte{1})
		data.AddRtAttr(nl.IFLA_BR_NF_CALL_IP6TABLES, []byte{1})
		req.AddData(info)
		_, err = req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("security groups: bridge %s: %w", bridgeName(vni), err)
	}
	return nil
}
