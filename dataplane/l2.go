package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The host's bridge-family table, hostTable, does two things.
//
// It keeps every tenant frame from the host itself (input and output
// chains): a tenant bridge has no address, but the kernel would still
// answer ARP for the host's other addresses on it and accept packets
// sent to the bridge's MAC. Frames arriving on a port Hearth made (VXLAN
// devices, router legs, NIC ports) and meant for the host are dropped,
// and the host sends none out of them.
//
// And it holds, per network, what must not cross the network's VXLAN
// device, so that every host serves its own VMs: chains out-VNI and
// in-VNI, reached from the forward chain through two verdict maps keyed
// by the VXLAN device's name. A frame costs one map lookup however many
// networks the host carries, and a network's rules change in one
// transaction without touching the others'.

const (
	vxOutMap = "vxout"
	vxInMap  = "vxin"
)

var hostChains = []nftChain{
	{name: "input", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput, priority: nftables.ChainPriorityFilter},
	{name: "output", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookOutput, priority: nftables.ChainPriorityFilter},
	{name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward, priority: nftables.ChainPriorityFilter},
}

func hostTableRef() *nftables.Table {
	return &nftables.Table{Name: hostTable, Family: nftables.TableFamilyBridge}
}

func vxMap(name string) *nftables.Set {
	// Host byte order: how nft itself marks an interface name key, and
	// shows it as a name only then.
	return &nftables.Set{Table: hostTableRef(), Name: name, IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict,
		KeyByteOrder: binaryutil.NativeEndian}
}

// hostRules is hostTable's own rules (not the networks').
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
	for _, m := range []struct {
		key expr.MetaKey
		set string
	}{{expr.MetaKeyIIFNAME, portFromMap}, {expr.MetaKeyOIFNAME, portToMap}, {expr.MetaKeyOIFNAME, vxOutMap}, {expr.MetaKeyIIFNAME, vxInMap}} {
		rules = append(rules, nftRule{chain: "forward", name: "dispatch-" + m.set, exprs: []expr.Any{
			&expr.Meta{Key: m.key, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: m.set, IsDestRegSet: true, DestRegister: 0},
		}})
	}
	return &nftTable{name: hostTable, family: nftables.TableFamilyBridge, chains: hostChains, rules: rules}
}

// hostMaps are hostTable's verdict maps: the VXLAN devices' and the
// ports' (antispoof.go).
var hostMaps = []string{vxOutMap, vxInMap, portFromMap, portToMap}

func (t *nftTable) hostIDs() []string {
	ids := t.ids()
	for _, m := range hostMaps {
		ids = append(ids, "map:"+m)
	}
	return ids
}

// readHostTable returns the ids of hostTable's own chains, rules and
// maps, or nil if there is no table.
func readHostTable(c *nftables.Conn) ([]string, error) {
	ids, err := readTable(c, hostTable, nftables.TableFamilyBridge, hostChains)
	if err != nil || ids == nil {
		return ids, err
	}
	for _, name := range hostMaps {
		if _, err := c.GetSetByName(hostTableRef(), name); err == nil {
			ids = append(ids, "map:"+name)
		} else if !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("reading nftables map %s: %w", name, err)
		}
	}
	return ids, nil
}

// writeHostTable makes hostTable anew: its own chains and maps, no
// network's.
func writeHostTable(c *nftables.Conn) error {
	t := hostRules()
	tab := hostTableRef()
	c.AddTable(tab)
	c.DelTable(tab)
	c.AddTable(tab)
	for _, name := range hostMaps {
		if err := c.AddSet(vxMap(name), nil); err != nil {
			return err
		}
	}
	addChains(c, tab, t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing nftables table %s: %w", hostTable, err)
	}
	return nil
}

// fixHostChains rewrites hostTable's own chains (and makes missing
// maps) without touching the networks' chains and map elements.
func fixHostChains(c *nftables.Conn, have []string) error {
	t := hostRules()
	tab := hostTableRef()
	for _, name := range hostMaps {
		if !containsString(have, "map:"+name) {
			if err := c.AddSet(vxMap(name), nil); err != nil {
				return err
			}
		}
	}
	for _, ch := range t.chains {
		if containsString(have, "chain:"+ch.name) {
			c.FlushChain(&nftables.Chain{Name: ch.name, Table: tab})
		}
	}
	addChains(c, tab, t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("repairing nftables table %s: %w", hostTable, err)
	}
	return nil
}

func addChains(c *nftables.Conn, tab *nftables.Table, t *nftTable) {
	chains := map[string]*nftables.Chain{}
	for _, ch := range t.chains {
		accept := nftables.ChainPolicyAccept
		nc := &nftables.Chain{Name: ch.name, Table: tab, Type: ch.typ, Hooknum: ch.hook, Priority: ch.priority}
		if ch.hook != nil {
			nc.Policy = &accept
		}
		chains[ch.name] = c.AddChain(nc)
	}
	for _, ch := range t.chains {
		for _, r := range t.rules {
			if r.chain == ch.name {
				c.AddRule(&nftables.Rule{Table: tab, Chain: chains[ch.name], Exprs: r.exprs, UserData: []byte(r.id(t.family))})
			}
		}
	}
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func outChain(vni uint32) string { return "out-" + vniString(vni) }
func inChain(vni uint32) string  { return "in-" + vniString(vni) }

// netChainVNI parses a network chain's name.
func netChainVNI(name string) (uint32, bool) {
	if vni, ok := portChainVNI(name); ok {
		return vni, true
	}
	for _, p := range []string{"out-", "in-"} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			return parseVNI(rest)
		}
	}
	return 0, false
}

// l2Rules is what must not cross a network's VXLAN device, in chains
// out-VNI (frames leaving by it) and in-VNI (frames arriving by it).
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
	gw := GatewayMAC(n.VNI)
	out, in := outChain(n.VNI), inChain(n.VNI)
	var rules []nftRule
	add := func(chain, name string, parts ...[]expr.Any) {
		rules = append(rules, nftRule{chain: chain, name: name, exprs: cat(parts...)})
	}
	dropIt := []expr.Any{drop()}

	add(out, "to-gateway", etherAddr(0, gw), dropIt)
	add(out, "gateway-multicast", etherAddr(6, gw), etherMulticast(), dropIt)
	add(out, "gateway-arp", etherAddr(6, gw), etherType(unix.ETH_P_ARP), dropIt)
	add(out, "gateway-nd", etherAddr(6, gw), etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 133, 137), dropIt)
	routed := RoutedMAC(underlay)
	for _, t := range []struct {
		name string
		typ  uint16
	}{{"routed-ip", unix.ETH_P_IP}, {"routed-ip6", unix.ETH_P_IPV6}} {
		add(out, t.name, etherAddr(6, gw), etherType(t.typ), []expr.Any{
			&expr.Immediate{Register: 1, Data: routed},
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		})
	}
	add(out, "gateway-other", etherAddr(6, gw), dropIt)
	add(in, "from-gateway", etherAddr(6, gw), dropIt)
	add(in, "to-gateway", etherAddr(0, gw), dropIt)
	for _, s := range n.Subnets {
		if s.Gateway.Is4() {
			add(out, "arp-"+s.Gateway.String(), etherType(unix.ETH_P_ARP), arpTarget(s.Gateway), dropIt)
			add(in, "arp-"+s.Gateway.String(), etherType(unix.ETH_P_ARP), arpTarget(s.Gateway), dropIt)
		}
	}
	for _, chain := range []string{out, in} {
		add(chain, "dhcp", etherType(unix.ETH_P_IP), l4(unix.IPPROTO_UDP), transportRange(2, 2, 67, 68), dropIt)
		add(chain, "dhcp6", etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_UDP), transportRange(2, 2, 546, 547), dropIt)
		add(chain, "rs-ra", etherType(unix.ETH_P_IPV6), l4(unix.IPPROTO_ICMPV6), transportRange(0, 1, 133, 134), dropIt)
	}
	portChains, portRules := antiSpoofRules(n)
	return &nftTable{name: hostTable, family: nftables.TableFamilyBridge,
		chains: append([]nftChain{{name: out}, {name: in}}, portChains...), rules: append(rules, portRules...)}
}

// l2IDs are a network's l2 rule ids and its map elements: two for the
// VXLAN device, one per port.
func l2IDs(n *Network, underlay netip.Addr) []string {
	vx := vxlanName(n.VNI)
	ids := append(l2Rules(n, underlay).ids(), "map:"+vxOutMap+":"+vx+":"+outChain(n.VNI), "map:"+vxInMap+":"+vx+":"+inChain(n.VNI))
	for _, p := range n.Ports {
		ids = append(ids, "map:"+portFromMap+":"+p.Name+":"+portChain(n.VNI, p.Name))
	}
	for _, p := range n.Ports {
		if p.Security != nil {
			ids = append(ids, "map:"+portToMap+":"+p.Name+":"+portInChain(n.VNI, p.Name))
		}
	}
	return ids
}

// readL2 reads a network's chains and map elements in the form l2IDs
// gives; nil when it has none of them.
func readL2(c *nftables.Conn, vni uint32, maps map[string]map[string]string) ([]string, error) {
	tab := hostTableRef()
	names := []string{outChain(vni), inChain(vni)}
	ports, err := listPortChains(c, vni)
	if err != nil {
		return nil, err
	}
	names = append(names, ports...)
	var ids []string
	var present []string
	for _, name := range names {
		if _, err := c.ListChain(tab, name); err != nil {
			continue
		}
		ids = append(ids, "chain:"+name)
		present = append(present, name)
	}
	for _, name := range present {
		rules, err := c.GetRules(tab, &nftables.Chain{Name: name, Table: tab})
		if err != nil {
			return nil, fmt.Errorf("reading nftables chain %s: %w", name, err)
		}
		for _, r := range rules {
			ids = append(ids, string(r.UserData))
		}
	}
	vx := vxlanName(vni)
	for _, m := range []string{vxOutMap, vxInMap} {
		if chain, ok := maps[m][vx]; ok {
			ids = append(ids, "map:"+m+":"+vx+":"+chain)
		}
	}
	for _, m := range portMaps {
		for _, port := range portsOf(maps, m, vni) {
			ids = append(ids, "map:"+m+":"+port+":"+maps[m][port])
		}
	}
	return ids, nil
}

// listPortChains lists the port chains of a network in hostTable,
// sorted (the order l2Rules makes them in).
func listPortChains(c *nftables.Conn, vni uint32) ([]string, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var out []string
	for _, ch := range chains {
		if ch.Table.Name == hostTable && strings.HasPrefix(ch.Name, portChainPrefix(vni)) {
			out = append(out, ch.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// portsOf lists the ports whose element in map m jumps to a chain of the
// network, sorted.
func portsOf(maps map[string]map[string]string, m string, vni uint32) []string {
	var out []string
	for port, chain := range maps[m] {
		if strings.HasPrefix(chain, portChainPrefix(vni)) {
			out = append(out, port)
		}
	}
	slices.Sort(out)
	return out
}

// readMaps reads the dispatch maps: map → device → chain jumped to.
func readMaps(c *nftables.Conn) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, name := range hostMaps {
		out[name] = map[string]string{}
		elems, err := c.GetSetElements(vxMap(name))
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("reading nftables map %s: %w", name, err)
		}
		for _, e := range elems {
			// The library hands a verdict back undecoded, as the
			// attributes of NFTA_DATA_VERDICT.
			out[name][cString(e.Key)] = attrString(parseAttrs(e.Val), unix.NFTA_VERDICT_CHAIN)
		}
	}
	return out, nil
}

// writeL2 makes a network's chains and map elements what l2Rules and
// l2IDs say, in one transaction, touching only the chains and elements
// that differ from have (what the network has in the table now, in the
// form l2IDs gives): a port's change costs that port's chain.
func writeL2(c *nftables.Conn, n *Network, underlay netip.Addr, have []string) error {
	t := l2Rules(n, underlay)
	tab := hostTableRef()
	haveChains := map[string]bool{}
	haveRules := map[string][]string{}
	haveElems := map[string]bool{}
	for _, id := range have {
		switch {
		case strings.HasPrefix(id, "chain:"):
			haveChains[strings.TrimPrefix(id, "chain:")] = true
		case strings.HasPrefix(id, "map:"):
			haveElems[id] = true
		default:
			chain, _, _ := strings.Cut(id, "/")
			haveRules[chain] = append(haveRules[chain], id)
		}
	}
	wantElems := map[string]bool{}
	for _, id := range l2IDs(n, underlay) {
		if strings.HasPrefix(id, "map:") {
			wantElems[id] = true
		}
	}
	// Elements first: a chain still jumped to cannot be deleted.
	for id := range haveElems {
		if wantElems[id] {
			continue
		}
		for _, m := range portMaps {
			if rest, ok := strings.CutPrefix(id, "map:"+m+":"); ok {
				port, _, _ := strings.Cut(rest, ":")
				c.SetDeleteElements(vxMap(m), []nftables.SetElement{{Key: ifnameKey(port)}})
			}
		}
	}
	wantChains := map[string]bool{}
	for _, ch := range t.chains {
		wantChains[ch.name] = true
	}
	for name := range haveChains {
		if !wantChains[name] && strings.HasPrefix(name, portChainPrefix(n.VNI)) {
			ch := &nftables.Chain{Name: name, Table: tab}
			c.FlushChain(ch)
			c.DelChain(ch)
		}
	}
	for _, ch := range t.chains {
		var ids []string
		for _, r := range t.rules {
			if r.chain == ch.name {
				ids = append(ids, r.id(t.family))
			}
		}
		if haveChains[ch.name] && slices.Equal(ids, haveRules[ch.name]) {
			continue
		}
		chain := &nftables.Chain{Name: ch.name, Table: tab}
		c.AddChain(chain)
		c.FlushChain(chain)
		for _, r := range t.rules {
			if r.chain == ch.name {
				c.AddRule(&nftables.Rule{Table: tab, Chain: chain, Exprs: r.exprs, UserData: []byte(r.id(t.family))})
			}
		}
	}
	vx := ifnameKey(vxlanName(n.VNI))
	elem := func(m, key string, keyBytes []byte, chain string) error {
		if haveElems["map:"+m+":"+key+":"+chain] {
			return nil
		}
		// Adding an element again (without NLM_F_EXCL) is no error.
		return c.SetAddElements(vxMap(m), []nftables.SetElement{{Key: keyBytes, VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}})
	}
	if err := elem(vxOutMap, vxlanName(n.VNI), vx, outChain(n.VNI)); err != nil {
		return err
	}
	if err := elem(vxInMap, vxlanName(n.VNI), vx, inChain(n.VNI)); err != nil {
		return err
	}
	for _, p := range n.Ports {
		if err := elem(portFromMap, p.Name, ifnameKey(p.Name), portChain(n.VNI, p.Name)); err != nil {
			return err
		}
		if p.Security != nil {
			if err := elem(portToMap, p.Name, ifnameKey(p.Name), portInChain(n.VNI, p.Name)); err != nil {
				return err
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing the l2 rules of VNI %d: %w", n.VNI, err)
	}
	return nil
}

func addChainRules(c *nftables.Conn, tab *nftables.Table, t *nftTable) {
	for _, ch := range t.chains {
		chain := &nftables.Chain{Name: ch.name, Table: tab}
		for _, r := range t.rules {
			if r.chain == ch.name {
				c.AddRule(&nftables.Rule{Table: tab, Chain: chain, Exprs: r.exprs, UserData: []byte(r.id(t.family))})
			}
		}
	}
}

// deleteL2 removes a network's map elements and chains, each on its own
// so that what is already gone does not stop the rest.
func deleteL2(c *nftables.Conn, vni uint32) error {
	tab := hostTableRef()
	var errs []error
	try := func(what string, queue func()) {
		queue()
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", what, err))
		}
	}
	vx := ifnameKey(vxlanName(vni))
	for _, m := range []string{vxOutMap, vxInMap} {
		try("map element "+m, func() { c.SetDeleteElements(vxMap(m), []nftables.SetElement{{Key: vx}}) })
	}
	if maps, err := readMaps(c); err == nil {
		for _, m := range portMaps {
			for _, port := range portsOf(maps, m, vni) {
				try("map element "+m+" "+port, func() {
					c.SetDeleteElements(vxMap(m), []nftables.SetElement{{Key: ifnameKey(port)}})
				})
			}
		}
	} else {
		errs = append(errs, err)
	}
	ports, err := listPortChains(c, vni)
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range append([]string{outChain(vni), inChain(vni)}, ports...) {
		try("chain "+name, func() {
			ch := &nftables.Chain{Name: name, Table: tab}
			c.FlushChain(ch)
			c.DelChain(ch)
		})
	}
	return errors.Join(errs...)
}

func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
