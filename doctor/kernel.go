package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// Condition types of the kernel's findings.
const (
	condKernel       = "KernelFeatures"
	condBridgeFilter = "BridgeFiltering"
)

// kernelFeatures tries, in a network namespace of its own that goes away
// afterwards with everything in it, what the data plane and the sandbox
// do: make a namespace, a bridge, a veth pair, a VXLAN device and a tap,
// and nftables tables of the bridge and inet families with a NAT chain.
// Modules load on demand as they would for Hearth.
func kernelFeatures(ctx context.Context) []Finding {
	if os.Geteuid() != 0 {
		return []Finding{{Check: "network-namespaces", Condition: condKernel, Status: Skipped,
			Message: "not tried: making network namespaces needs root", Fix: "run hearth doctor as root (sudo)"}}
	}
	ns, err := netns.New()
	if err != nil {
		return []Finding{{Check: "network-namespaces", Condition: condKernel, Status: Fail,
			Message: err.Error(),
			Fix:     "use a kernel with network namespaces (CONFIG_NET_NS); in a container, run it privileged (--privileged, or CAP_SYS_ADMIN and CAP_NET_ADMIN)"}}
	}
	defer ns.Close()
	out := []Finding{{Check: "network-namespaces", Condition: condKernel, Status: OK, Message: "network namespaces work"}}
	var tries []Finding
	err = netns.Do(ns, func() error {
		tries = tryLinks()
		tries = append(tries, tryNftables())
		return nil
	})
	if err != nil {
		return append(out, Finding{Check: "network-namespaces", Condition: condKernel, Status: Fail,
			Message: "entering a new network namespace: " + err.Error(), Fix: "run hearth doctor as root, not in a restricted container"})
	}
	return append(out, tries...)
}

// tryLinks makes each kind of link the data plane makes, in the calling
// thread's (throwaway) namespace.
func tryLinks() []Finding {
	type try struct {
		check, what string
		link        netlink.Link
		fix         string
	}
	tries := []try{
		{"bridge", "a bridge", &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "hdoc-br"}},
			"modprobe bridge (kernel option CONFIG_BRIDGE); to load it at boot: echo bridge > /etc/modules-load.d/hearth.conf"},
		{"veth", "a veth pair", &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hdoc-v0"}, PeerName: "hdoc-v1"},
			"modprobe veth (kernel option CONFIG_VETH)"},
		{"vxlan", "a VXLAN device", &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "hdoc-vx"}, VxlanId: 4242, Port: 4789},
			"modprobe vxlan (kernel option CONFIG_VXLAN); tenant networks span hosts over VXLAN"},
		{"tun", "a tap device", &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "hdoc-tap"}, Mode: netlink.TUNTAP_MODE_TAP},
			"modprobe tun, and check that /dev/net/tun exists (mknod /dev/net/tun c 10 200); VM NICs are taps"},
	}
	var out []Finding
	for _, t := range tries {
		f := Finding{Check: t.check, Condition: condKernel, Status: OK, Message: t.what + " can be made"}
		if err := netlink.LinkAdd(t.link); err != nil {
			f.Status, f.Message, f.Fix = Fail, fmt.Sprintf("making %s: %v", t.what, err), t.fix
		}
		out = append(out, f)
	}
	return out
}

// tryNftables makes what the data plane's tables need: a bridge-family
// table with a forward chain and a rule (the host's filtering of tenant
// frames), and an inet table with a NAT chain and a masquerade rule (a
// router's SNAT).
func tryNftables() Finding {
	f := Finding{Check: "nftables", Condition: condKernel, Status: OK,
		Message: "nftables bridge filtering and NAT work"}
	conn, err := nftables.New()
	if err == nil {
		br := conn.AddTable(&nftables.Table{Name: "hearth-doctor", Family: nftables.TableFamilyBridge})
		fwd := conn.AddChain(&nftables.Chain{Name: "forward", Table: br, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		conn.AddRule(&nftables.Rule{Table: br, Chain: fwd, Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}}})
		in := conn.AddTable(&nftables.Table{Name: "hearth-doctor", Family: nftables.TableFamilyINet})
		post := conn.AddChain(&nftables.Chain{Name: "postrouting", Table: in, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
		conn.AddRule(&nftables.Rule{Table: in, Chain: post, Exprs: []expr.Any{&expr.Masq{}}})
		err = conn.Flush()
	}
	if err != nil {
		f.Status, f.Message = Fail, "making nftables tables (bridge filter, inet NAT): "+err.Error()
		f.Fix = "modprobe nf_tables nft_chain_nat nft_masq nf_conntrack_bridge (kernel options CONFIG_NF_TABLES, CONFIG_NF_TABLES_BRIDGE, CONFIG_NFT_NAT, CONFIG_NFT_MASQ)"
	}
	return f
}

// bridgeNetfilter warns where bridged tenant traffic would meet the
// host's IP firewall: with br_netfilter loaded (Docker and Kubernetes load
// it) and net.bridge.bridge-nf-call-iptables=1, frames crossing a bridge
// go through the IPv4 FORWARD hook, and a FORWARD policy of drop (Docker
// sets one) drops every frame between two VMs on a tenant network. The
// bridges of networks with security groups go through it whatever the
// sysctl says (the agent turns nf_call_iptables on for them: stateful
// rules need the IP hooks' connection tracking), and without br_netfilter
// security groups cannot be enforced at all.
func bridgeNetfilter() []Finding {
	call, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	loaded := err == nil
	var drops []string
	if loaded {
		drops = forwardDropChains()
	}
	return []Finding{judgeBridgeNetfilter(loaded, strings.TrimSpace(string(call)) == "1", drops)}
}

// judgeBridgeNetfilter decides from what bridgeNetfilter read: whether
// br_netfilter is loaded, whether it hands bridged IPv4 to the IP hooks,
// and the forward chains whose policy is drop.
func judgeBridgeNetfilter(loaded, callIPTables bool, dropChains []string) Finding {
	f := Finding{Check: "bridge-netfilter", Condition: condBridgeFilter, Status: OK}
	fix := "let Hearth's bridges forward: iptables -I FORWARD -i hbr+ -o hbr+ -j ACCEPT (with Docker: iptables -I DOCKER-USER -i hbr+ -o hbr+ -j ACCEPT), " +
		"and the same for your external network's bridge"
	switch {
	case !loaded:
		f.Status = Warn
		f.Message = "br_netfilter is not loaded: security groups cannot be enforced (their rules are stateful, and bridged connections are tracked only through it), so networks whose NICs have security groups are not set up here"
		f.Fix = "modprobe br_netfilter, and list it in /etc/modules-load.d/ to keep it"
	case len(dropChains) == 0 && !callIPTables:
		f.Message = "br_netfilter is loaded; bridged tenant traffic meets the host's IP firewall only on networks with security groups, and its forward chains accept it by default"
	case len(dropChains) == 0:
		f.Message = "br_netfilter hands bridged traffic to the host's IP firewall, whose forward chains accept it by default"
	case !callIPTables:
		f.Status = Warn
		f.Message = fmt.Sprintf("the forward policy of %s is drop (Docker sets it), and the bridges of networks with security groups hand their traffic to it "+
			"(net.bridge.bridge-nf-call-iptables=0 does not change that: Hearth turns it on for those bridges): traffic between their VMs would be dropped", strings.Join(dropChains, ", "))
		f.Fix = fix
	default:
		f.Status = Warn
		f.Message = fmt.Sprintf("br_netfilter is loaded with net.bridge.bridge-nf-call-iptables=1 and the forward policy of %s is drop (Docker sets it): "+
			"traffic between VMs on a tenant network crosses a bridge and would be dropped", strings.Join(dropChains, ", "))
		f.Fix = fix + "; or, if nothing on this host needs br_netfilter: sysctl -w net.bridge.bridge-nf-call-iptables=0 " +
			"(and in /etc/sysctl.d/ to keep it), which leaves only the bridges of networks with security groups to the firewall"
	}
	return f
}

// forwardDropChains lists the IPv4 forward base chains whose policy is
// drop: nftables' (iptables-nft included, Debian's default) as
// "family table/chain", and iptables-legacy's FORWARD where legacy
// tables are in use.
func forwardDropChains() []string {
	var out []string
	if conn, err := nftables.New(); err == nil {
		chains, err := conn.ListChains()
		if err == nil {
			for _, c := range chains {
				if c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookForward || c.Policy == nil || *c.Policy != nftables.ChainPolicyDrop {
					continue
				}
				switch c.Table.Family {
				case nftables.TableFamilyIPv4:
					out = append(out, "ip "+c.Table.Name+"/"+c.Name)
				case nftables.TableFamilyINet:
					out = append(out, "inet "+c.Table.Name+"/"+c.Name)
				}
			}
		}
	}
	if names, err := os.ReadFile("/proc/thread-self/net/ip_tables_names"); err == nil && strings.Contains(string(names), "filter") {
		if path, err := exec.LookPath("iptables-legacy"); err == nil {
			if b, err := exec.Command(path, "-S", "FORWARD").Output(); err == nil && strings.Contains(string(b), "-P FORWARD DROP") {
				out = append(out, "iptables-legacy filter/FORWARD")
			}
		}
	}
	return out
}

// errnoOf returns the errno inside err, or 0.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}
