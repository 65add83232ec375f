package dataplanetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/netns"
)

// SecurityGroupsConfig says how the security groups benchmark runs.
type SecurityGroupsConfig struct {
	Rules   int // rules on each end's port (default 1000)
	Seconds int // per iperf3 run (default 3)
	Rounds  int // alternating runs with rules and without (default 5)
	Changes int // rule changes timed (default 20)
}

// SecurityGroupsResult is what RunSecurityGroups measured.
type SecurityGroupsResult struct {
	// Gbps per round without rules (ports unfiltered) and with Rules on
	// each end (the client's egress, the server's ingress; the rule that
	// allows iperf3 last, so a new connection walks them all).
	NoneGbps, RulesGbps             []float64
	NoneMedian, RulesMedian, Ratio  float64
	ChangeP50, ChangeP95, ChangeMax time.Duration
	Changes                         []time.Duration
}

// RunSecurityGroups measures what security groups cost: TCP throughput
// (iperf3) between two VMs on two simulated hosts with none and with
// many rules in force, in alternating rounds; and the time from Apply of
// a state with one more rule to the first TCP connection it lets through.
func RunSecurityGroups(ctx context.Context, cfg SecurityGroupsConfig, w io.Writer) (*SecurityGroupsResult, error) {
	if cfg.Rules == 0 {
		cfg.Rules = 1000
	}
	if cfg.Seconds == 0 {
		cfg.Seconds = 3
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 5
	}
	if cfg.Changes == 0 {
		cfg.Changes = 20
	}
	pair, err := newVMPair("bench security groups")
	if err != nil {
		return nil, err
	}
	defer pair.Close()
	vms, addrs := pair.vms, pair.addrs
	// many is n rules that match nothing here, then last.
	many := func(n int, last dataplane.SecurityRule) []dataplane.SecurityRule {
		var rules []dataplane.SecurityRule
		for k := range n - 1 {
			rules = append(rules, dataplane.SecurityRule{Protocol: "tcp", FromPort: uint16(10000 + k), ToPort: uint16(10000 + k),
				CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(k >> 8), byte(k)}), 32)})
		}
		return append(rules, last)
	}
	iperfRule := dataplane.SecurityRule{Protocol: "tcp", FromPort: 5201, ToPort: 5201}
	filteredClient := &dataplane.PortSecurity{Egress: many(cfg.Rules, iperfRule)}
	filteredServer := &dataplane.PortSecurity{Ingress: many(cfg.Rules, iperfRule)}
	apply := func(client, server *dataplane.PortSecurity) error {
		return pair.apply(ctx, "bench/sg", 4343, client, server)
	}
	if err := apply(nil, nil); err != nil {
		return nil, err
	}
	if err := pair.configure(); err != nil {
		return nil, err
	}
	if err := vms[0].Ping(addrs[1], 50); err != nil {
		return nil, err
	}

	res := &SecurityGroupsResult{}
	for range cfg.Rounds {
		if err := apply(nil, nil); err != nil {
			return nil, err
		}
		g, err := iperf(ctx, vms[0], vms[1], addrs[1], cfg.Seconds)
		if err != nil {
			return nil, fmt.Errorf("without rules: %w", err)
		}
		res.NoneGbps = append(res.NoneGbps, g)
		if err := apply(filteredClient, filteredServer); err != nil {
			return nil, err
		}
		if g, err = iperf(ctx, vms[0], vms[1], addrs[1], cfg.Seconds); err != nil {
			return nil, fmt.Errorf("with %d rules: %w", cfg.Rules, err)
		}
		res.RulesGbps = append(res.RulesGbps, g)
	}
	res.NoneMedian, res.RulesMedian = median(res.NoneGbps), median(res.RulesGbps)
	if res.NoneMedian > 0 {
		res.Ratio = res.RulesMedian / res.NoneMedian
	}

	// Rule changes: each opens a port the server listens on, with the
	// thousand rules in force.
	server := filteredServer
	for k := range cfg.Changes {
		port := 6000 + k
		var ln net.Listener
		err := netns.Do(vms[1].NS, func() error {
			var err error
			ln, err = net.Listen("tcp", net.JoinHostPort(addrs[1].String(), strconv.Itoa(port)))
			return err
		})
		if err != nil {
			return nil, err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		client := &dataplane.PortSecurity{Egress: append(slices.Clone(filteredClient.Egress), dataplane.SecurityRule{Protocol: "tcp", FromPort: uint16(port), ToPort: uint16(port)})}
		server = &dataplane.PortSecurity{Ingress: append(slices.Clone(server.Ingress), dataplane.SecurityRule{Protocol: "tcp", FromPort: uint16(port), ToPort: uint16(port)})}
		if err := pair.planes[0].Apply(ctx, pair.state(0, "bench/sg", 4343, client)); err != nil {
			ln.Close()
			return nil, err
		}
		start := time.Now()
		if err := pair.planes[1].Apply(ctx, pair.state(1, "bench/sg", 4343, server)); err != nil {
			ln.Close()
			return nil, err
		}
		for {
			if connectOnce(vms[0], addrs[1], port) == nil {
				break
			}
			if time.Since(start) > 10*time.Second {
				ln.Close()
				return nil, fmt.Errorf("port %d not open 10s after its rule was applied", port)
			}
		}
		res.Changes = append(res.Changes, time.Since(start))
		ln.Close()
	}
	sorted := slices.Clone(res.Changes)
	slices.Sort(sorted)
	res.ChangeP50, res.ChangeP95, res.ChangeMax = percentile(sorted, 50), percentile(sorted, 95), sorted[len(sorted)-1]

	if w != nil {
		fmt.Fprintf(w, "security groups: TCP between two VMs on two simulated hosts (iperf3 -t %d, %d alternating rounds, median)\n", cfg.Seconds, cfg.Rounds)
		fmt.Fprintf(w, "  no rules:                      %.2f Gbit/s  (%s)\n", res.NoneMedian, gbpsList(res.NoneGbps))
		fmt.Fprintf(w, "  %d rules on each end:        %.2f Gbit/s  (%s)\n", cfg.Rules, res.RulesMedian, gbpsList(res.RulesGbps))
		fmt.Fprintf(w, "  ratio: %.2f×\n", res.Ratio)
		fmt.Fprintf(w, "rule change (Apply of one more rule among %d → first connection through it), %d changes: p50 %s, p95 %s, max %s\n",
			cfg.Rules, cfg.Changes, res.ChangeP50.Round(10*time.Microsecond), res.ChangeP95.Round(10*time.Microsecond), res.ChangeMax.Round(10*time.Microsecond))
	}
	return res, nil
}

// connectOnce makes one TCP connection from a namespace, giving a dropped
// SYN 100ms.
func connectOnce(ns *Namespace, addr netip.Addr, port int) error {
	return netns.Do(ns.NS, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(port)), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return sorted[i-1]
}

func gbpsList(v []float64) string {
	var s []string
	for _, g := range v {
		s = append(s, fmt.Sprintf("%.2f", g))
	}
	return strings.Join(s, " ")
}
