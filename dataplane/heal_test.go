package dataplane_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// Whatever is deleted or changed by hand is noticed (Changes), and the
// next Apply puts it back, touching nothing of the other networks.
func TestSelfHealing(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("heal", 500, true, "10.5.0.0/24")
	c.addNet("bystander", 501, false, "10.6.0.0/24")
	s1 := c.addVM("s1", "heal", 0, "10.5.0.2")
	s2 := c.addVM("s2", "heal", 1, "10.5.0.3")
	c.addVM("by1", "bystander", 0, "10.6.0.2")
	c.addVM("by2", "bystander", 1, "10.6.0.3")
	c.apply()
	c.mustPing("s1", s2.addr)
	srv, err := c.lab.Internet.ServeUDP(7000, "internet")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	h := c.lab.Hosts[0]
	p := c.planes[0]
	router := &dataplanetest.Namespace{Name: p.RouterNetns(500)}
	peer := c.lab.Hosts[1].Underlay.String()
	gw := dataplane.GatewayMAC(500).String()
	l2Rules := func() int {
		n, err := countRules(h.Path(), "hearth-host", nftables.TableFamilyBridge, "out-500", "in-500")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	wantL2 := l2Rules()
	checkL2 := func() error {
		if got := l2Rules(); got != wantL2 {
			return fmt.Errorf("chains out-500 and in-500 have %d rules, want %d", got, wantL2)
		}
		for m, want := range map[string]string{"vxout": "out-500", "vxin": "in-500"} {
			got, err := mapJump(h.Path(), m, "hvx500")
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("map %s sends hvx500 to %q, want %q", m, got, want)
			}
		}
		return nil
	}
	contains := func(ns *dataplanetest.Namespace, args []string, want string) func() error {
		return func() error {
			var out string
			var err error
			if args[0] == "bridge" {
				out, err = ns.Bridge(args[1:]...)
			} else {
				out, err = ns.IP(args...)
			}
			if err != nil {
				return err
			}
			if !strings.Contains(out, want) {
				return fmt.Errorf("%q lacks %q:\n%s", strings.Join(args, " "), want, out)
			}
			return nil
		}
	}
	s1Chain := "port-500-" + dataplane.PortName("s1")
	s1Rules, err := countRules(h.Path(), "hearth-host", nftables.TableFamilyBridge, s1Chain)
	if err != nil || s1Rules == 0 {
		t.Fatalf("%s has %d rules (%v)", s1Chain, s1Rules, err)
	}
	for _, tc := range []struct {
		name   string
		break_ func() error
		check  func() error
	}{
		{"anti-spoofing rule deleted",
			func() error { return deleteFirstRule(h.Path(), "hearth-host", nftables.TableFamilyBridge, s1Chain) },
			func() error {
				n, err := countRules(h.Path(), "hearth-host", nftables.TableFamilyBridge, s1Chain)
				if err != nil || n != s1Rules {
					return fmt.Errorf("%s has %d rules (%v), want %d", s1Chain, n, err, s1Rules)
				}
				return nil
			}},
		{"security groups table deleted",
			func() error {
				return netns.DoPath(h.Path(), func() error {
					conn, err := nftables.New()
					if err != nil {
						return err
					}
					conn.DelTable(&nftables.Table{Name: "hearth-sg", Family: nftables.TableFamilyINet})
					return conn.Flush()
				})
			},
			func() error {
				n, err := countRules(h.Path(), "hearth-sg", nftables.TableFamilyINet, "zone")
				if err != nil || n == 0 {
					return fmt.Errorf("hearth-sg's zone chain has %d rules (%v)", n, err)
				}
				return nil
			}},
		{"vxlan device deleted",
			func() error { _, err := h.IP("link", "del", "hvx500"); return err },
			contains(h.Namespace, []string{"-d", "link", "show", "hvx500"}, "vxlan id 500")},
		{"flood FDB entry deleted",
			func() error {
				_, err := h.Bridge("fdb", "del", "00:00:00:00:00:00", "dev", "hvx500", "dst", peer)
				return err
			},
			contains(h.Namespace, []string{"bridge", "fdb", "show", "dev", "hvx500"}, "00:00:00:00:00:00 dst "+peer)},
		{"NIC FDB entry deleted",
			func() error {
				_, err := h.Bridge("fdb", "del", s2.mac.String(), "dev", "hvx500", "dst", peer)
				return err
			},
			contains(h.Namespace, []string{"bridge", "fdb", "show", "dev", "hvx500"}, s2.mac.String()+" dst "+peer)},
		{"gateway pin deleted",
			func() error { _, err := h.Bridge("fdb", "del", gw, "dev", "hri500", "master"); return err },
			func() error {
				out, err := h.Bridge("fdb", "show", "dev", "hri500")
				if err != nil {
					return err
				}
				for _, line := range strings.Split(out, "\n") {
					f := strings.Fields(line)
					if len(f) > 0 && f[0] == gw && strings.Contains(line, "sticky") && strings.Contains(line, "static") && strings.Contains(line, "master hbr500") {
						return nil
					}
				}
				return fmt.Errorf("gateway MAC not pinned to hri500:\n%s", out)
			}},
		{"router's default route deleted",
			func() error { _, err := router.IP("route", "del", "default"); return err },
			contains(router, []string{"route"}, "default via "+c.lab.InternetGateway.String())},
		{"gateway address deleted",
			func() error { _, err := router.IP("addr", "del", "10.5.0.1/24", "dev", "internal"); return err },
			contains(router, []string{"addr", "show", "internal"}, "10.5.0.1/24")},
		{"router neighbour deleted",
			func() error { _, err := router.IP("neigh", "del", s2.addr.String(), "dev", "internal"); return err },
			contains(router, []string{"neigh", "show", "dev", "internal"}, s2.addr.String()+" lladdr "+s2.mac.String()+" PERMANENT")},
		{"bridge deleted",
			func() error { _, err := h.IP("link", "del", "hbr500"); return err },
			contains(h.Namespace, []string{"link", "show", "master", "hbr500"}, "hvx500")},
		{"router leg deleted",
			func() error { _, err := h.IP("link", "del", "hri500"); return err },
			contains(router, []string{"addr", "show", "internal"}, "10.5.0.1/24")},
		{"NIC port MTU changed",
			func() error { _, err := h.IP("link", "set", dataplane.PortName("s1"), "mtu", "1300"); return err },
			contains(h.Namespace, []string{"link", "show", dataplane.PortName("s1")}, "mtu 1450")},
		{"l2 rule deleted",
			func() error { return deleteFirstRule(h.Path(), "hearth-host", nftables.TableFamilyBridge, "out-500") },
			checkL2},
		{"l2 map element deleted",
			func() error {
				return netns.DoPath(h.Path(), func() error {
					conn, err := nftables.New()
					if err != nil {
						return err
					}
					set, err := conn.GetSetByName(&nftables.Table{Name: "hearth-host", Family: nftables.TableFamilyBridge}, "vxout")
					if err != nil {
						return err
					}
					key := make([]byte, 16)
					copy(key, "hvx500")
					if err := conn.SetDeleteElements(set, []nftables.SetElement{{Key: key}}); err != nil {
						return err
					}
					return conn.Flush()
				})
			},
			func() error {
				if err := checkL2(); err != nil {
					return err
				}
				return contains(h.Namespace, []string{"bridge", "fdb", "show", "dev", "hvx500"}, "")()
			}},
		{"host input rule deleted",
			func() error { return deleteFirstRule(h.Path(), "hearth-host", nftables.TableFamilyBridge, "input") },
			func() error {
				n, err := countRules(h.Path(), "hearth-host", nftables.TableFamilyBridge, "input", "output", "forward")
				if err != nil {
					return err
				}
				if n != 10 {
					return fmt.Errorf("hearth-host's own chains have %d rules, want 10", n)
				}
				return nil
			}},
		{"host table deleted",
			func() error {
				return netns.DoPath(h.Path(), func() error {
					conn, err := nftables.New()
					if err != nil {
						return err
					}
					conn.DelTable(&nftables.Table{Name: "hearth-host", Family: nftables.TableFamilyBridge})
					return conn.Flush()
				})
			},
			checkL2},
		{"router NAT rule deleted",
			func() error {
				return deleteFirstRule(netns.Path(router.Name), "hearth-router", nftables.TableFamilyINet, "postrouting")
			},
			func() error {
				got, err := c.vm("s1").ns.AskUDP(c.lab.InternetGateway, 7000)
				if err != nil {
					return err
				}
				if want := "internet " + c.externalAddr(c.net("heal"), 0).Addr().String(); got != want {
					return fmt.Errorf("got %q, want %q", got, want)
				}
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drainChanges(p)
			if err := tc.break_(); err != nil {
				t.Fatalf("breaking: %v", err)
			}
			waitChange(t, p, tc.name)
			bystander, err := dataplanetest.WatchPath(netns.Path(p.RouterNetns(501)))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Apply(context.Background(), c.state(0)); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			bystander.Settle(200 * time.Millisecond)
			if msgs := bystander.Stop(); len(msgs) > 0 {
				t.Errorf("repairing network 500 changed network 501's router: %v", msgs)
			}
			if err := tc.check(); err != nil {
				t.Errorf("not repaired: %v", err)
			}
			c.mustPing("s1", s2.addr)
			c.mustPing("s1", s1.addrGateway(c))
		})
	}
}

func (vm *tvm) addrGateway(c *tcluster) netip.Addr { return c.net(vm.net).subnetOf(vm.addr).Gateway }

// countRules counts the rules of chains of a table in a namespace.
func countRules(nsPath, table string, family nftables.TableFamily, chainNames ...string) (int, error) {
	n := 0
	err := netns.DoPath(nsPath, func() error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		chains, err := conn.ListChainsOfTableFamily(family)
		if err != nil {
			return err
		}
		for _, ch := range chains {
			if ch.Table.Name != table || !slices.Contains(chainNames, ch.Name) {
				continue
			}
			rules, err := conn.GetRules(ch.Table, ch)
			if err != nil {
				return err
			}
			n += len(rules)
		}
		return nil
	})
	return n, err
}

func deleteFirstRule(nsPath, table string, family nftables.TableFamily, chain string) error {
	return netns.DoPath(nsPath, func() error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		t := &nftables.Table{Name: table, Family: family}
		rules, err := conn.GetRules(t, &nftables.Chain{Name: chain, Table: t})
		if err != nil {
			return err
		}
		if len(rules) == 0 {
			return fmt.Errorf("%s %s has no rules", table, chain)
		}
		if err := conn.DelRule(rules[0]); err != nil {
			return err
		}
		return conn.Flush()
	})
}

// mapJump returns the chain a verdict map of hearth-host jumps to for a
// device.
func mapJump(nsPath, set, dev string) (string, error) {
	chain := ""
	err := netns.DoPath(nsPath, func() error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		s, err := conn.GetSetByName(&nftables.Table{Name: "hearth-host", Family: nftables.TableFamilyBridge}, set)
		if err != nil {
			return err
		}
		elems, err := conn.GetSetElements(s)
		if err != nil {
			return err
		}
		for _, e := range elems {
			if strings.TrimRight(string(e.Key), "\x00") != dev {
				continue
			}
			// The verdict comes back as NFTA_DATA_VERDICT's attributes.
			ad, err := netlink.NewAttributeDecoder(e.Val)
			if err != nil {
				return err
			}
			for ad.Next() {
				if ad.Type() == unix.NFTA_VERDICT_CHAIN {
					chain = ad.String()
				}
			}
		}
		return nil
	})
	return chain, err
}
