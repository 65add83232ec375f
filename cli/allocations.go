package cli

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// allocationsOf returns, for the kinds that hold or hand out addresses, a
// table of who holds which (nil for other kinds): a VM's NICs, a
// network's ports and routers, a subnet's addresses (its tenant's VMs
// with a NIC there), and an external network's (floating IPs and
// routers, of every tenant: only those who may list them across tenants
// see it).
func allocationsOf(ctx context.Context, c *client.Client, obj api.Object) ([][]string, error) {
	header := []string{"HOLDER", "IP", "MAC", "HOST"}
	var rows [][]string
	switch o := obj.(type) {
	case *api.VirtualMachine:
		for i, ifc := range o.Status.Interfaces {
			rows = append(rows, []string{fmt.Sprintf("nics[%d] on %s/%s", i, ifc.Network, ifc.Subnet), ifc.IP, ifc.MAC, o.Spec.Host})
			if ifc.IPv6 != "" {
				rows = append(rows, []string{fmt.Sprintf("nics[%d] on %s/%s", i, ifc.Network, ifc.IPv6Subnet), ifc.IPv6, ifc.MAC, o.Spec.Host})
			}
		}
	case *api.Network:
		for _, p := range o.Status.Ports {
			ips := p.IPs
			if len(ips) == 0 {
				ips = []string{""}
			}
			for _, ip := range ips {
				rows = append(rows, []string{fmt.Sprintf("vm/%s nics[%d]", p.VM, p.NIC), ip, p.MAC, p.Host})
			}
		}
		for _, r := range o.Status.Routers {
			rows = append(rows, []string{"router (external address)", r.ExternalAddress, "", r.Host})
		}
	case *api.Subnet:
		vms, _, err := c.List(ctx, "VirtualMachine", o.Metadata.Tenant, client.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, v := range vms {
			vm := v.(*api.VirtualMachine)
			for i, ifc := range vm.Status.Interfaces {
				if ifc.Network != o.Spec.Network {
					continue
				}
				// A dual-stack NIC holds an address in two subnets.
				for _, h := range [][2]string{{ifc.Subnet, ifc.IP}, {ifc.IPv6Subnet, ifc.IPv6}} {
					if h[0] == o.Metadata.Name && h[1] != "" {
						rows = append(rows, []string{fmt.Sprintf("vm/%s nics[%d]", vm.Metadata.Name, i), h[1], ifc.MAC, vm.Spec.Host})
					}
				}
			}
		}
		sortByIP(rows)
	case *api.ExternalNetwork:
		all := client.ListOptions{AllTenants: true}
		fips, _, err := c.List(ctx, "FloatingIP", "", all)
		if err != nil {
			return nil, err
		}
		for _, x := range fips {
			f := x.(*api.FloatingIP)
			if f.Spec.ExternalNetwork == o.Metadata.Name && f.Status.Address != "" {
				rows = append(rows, []string{"floatingip/" + f.Metadata.Tenant + "/" + f.Metadata.Name, f.Status.Address, "", f.Status.Host})
			}
		}
		nets, _, err := c.List(ctx, "Network", "", all)
		if err != nil {
			return nil, err
		}
		for _, x := range nets {
			n := x.(*api.Network)
			for _, r := range n.Status.Routers {
				if n.Spec.ExternalNetwork == o.Metadata.Name && r.ExternalAddress != "" {
					rows = append(rows, []string{"router of network/" + n.Metadata.Tenant + "/" + n.Metadata.Name, r.ExternalAddress, "", r.Host})
				}
			}
		}
		sortByIP(rows)
	default:
		return nil, nil
	}
	return append([][]string{header}, rows...), nil
}

// sortByIP orders allocation rows by address.
func sortByIP(rows [][]string) {
	slices.SortStableFunc(rows, func(a, b []string) int {
		x, _ := netip.ParseAddr(a[1])
		y, _ := netip.ParseAddr(b[1])
		return x.Compare(y)
	})
}
