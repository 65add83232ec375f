package cli

import (
	"context"
	"fmt"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// securityRulesOf is the Security Rules table of `describe vm`: each
// NIC's effective rules, computed as the hosts compute them
// (api.SecurityIndex) from what the VM's tenant can read: its
// SecurityGroups, and its Networks' status.ports for the members of
// remote groups. Nil for other kinds.
func securityRulesOf(ctx context.Context, c *client.Client, obj api.Object) ([][]string, error) {
	vm, ok := obj.(*api.VirtualMachine)
	if !ok || len(vm.Spec.NICs) == 0 {
		return nil, nil
	}
	t := vm.Metadata.Tenant
	groups, _, err := c.List(ctx, "SecurityGroup", t, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	nets, _, err := c.List(ctx, "Network", t, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	var gs []*api.SecurityGroup
	for _, g := range groups {
		gs = append(gs, g.(*api.SecurityGroup))
	}
	var ns []*api.Network
	for _, n := range nets {
		ns = append(ns, n.(*api.Network))
	}
	return securityRows(vm, api.NewSecurityIndex(gs, ns)), nil
}

// securityRows lays out the effective rules of every NIC of vm.
func securityRows(vm *api.VirtualMachine, index *api.SecurityIndex) [][]string {
	rows := [][]string{{"NIC", "GROUP", "DIRECTION", "PROTOCOL", "PORTS", "REMOTE"}}
	for i, nic := range vm.Spec.NICs {
		name := fmt.Sprintf("nics[%d]", i)
		sec := index.NIC(vm.Metadata.Tenant, nic.SecurityGroups)
		if !sec.Filtered {
			rows = append(rows, []string{name, "<none>", "all", "any", "all", "unfiltered (anti-spoofing only)"})
			continue
		}
		for _, r := range sec.Rules {
			ports := r.Ports
			if ports == "" {
				ports = "all"
			}
			rows = append(rows, []string{name, r.Group, r.Direction, r.Protocol, ports, remoteOf(r)})
		}
		for _, g := range sec.Missing {
			rows = append(rows, []string{name, g, "-", "-", "-", "group does not exist: allows nothing"})
		}
		rows = append(rows, []string{name, "<default>", api.Ingress, "any", "all", "denied unless allowed above; replies to allowed traffic pass"})
		if !hasEgress(sec.Rules) {
			rows = append(rows, []string{name, "<default>", api.Egress, "any", "all", "anywhere (no egress rules)"})
		} else {
			rows = append(rows, []string{name, "<default>", api.Egress, "any", "all", "denied unless allowed above"})
		}
	}
	return rows
}

func remoteOf(r api.EffectiveRule) string {
	switch {
	case r.CIDR != "":
		return r.CIDR
	case r.RemoteGroup != "":
		if len(r.RemoteAddresses) == 0 {
			return "group " + r.RemoteGroup + " (no members)"
		}
		return "group " + r.RemoteGroup + " (" + strings.Join(r.RemoteAddresses, ", ") + ")"
	}
	return "anywhere"
}

func hasEgress(rules []api.EffectiveRule) bool {
	for _, r := range rules {
		if r.Direction == api.Egress {
			return true
		}
	}
	return false
}
