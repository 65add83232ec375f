package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/dataplane"
)

// netController keeps the host's tenant networks (package dataplane) what
// the API says: it computes the whole desired state (hostNetState) from
// the cache and hands it to the Plane whenever one of the objects it is
// computed from changes, whenever the Plane says someone changed what it
// made (Changes), and every netResync. It also runs each network's DHCP
// (netdhcp.go), and tells the VM controller when a VM's ports are there:
// a VM starts only once its taps exist (prepare).
//
// Its first Apply waits for the cache to be synced: an Apply from an
// empty cache would remove every network, so a restarted agent changes
// nothing until it knows the whole state, and then (the Plane adopts what
// is there) only what differs: running VMs see no flap.
type netController struct {
	a     *Agent
	plane dataplane.Plane
	kick  chan struct{}
	dhcp  *dhcpServers
	ra    *raServers
	// services are each network's DNS and metadata servers (netservices.go).
	services *routerServices

	mu sync.Mutex
	// ready are the ports of the networks the last Apply converged, by
	// name; vmPorts is what each VM's NICs got from the last state.
	ready   map[string]bool
	vmPorts map[string][]string
	// report says each problem once (the Host's NetworkReady condition,
	// an event, a log line); failures counts failed Applies in a row,
	// for the back-off.
	report   *netReport
	failures int
	// leaving keeps the ports of VMs moving live to another host until
	// their QEMU here is gone (netmigrate.go).
	leaving leavingTracker
}

// netResync is how often the state is applied without a change: the
// Plane reads the host again on its own schedule, and an Apply of the same
// state costs next to nothing.
const netResync = 10 * time.Second

// netDebounce gathers a burst of changes (a VM created writes several
// objects) into one Apply.
const netDebounce = 50 * time.Millisecond

func newNetController(a *Agent, plane dataplane.Plane) *netController {
	return &netController{a: a, plane: plane, kick: make(chan struct{}, 1), dhcp: newDHCPServers(plane), ra: newRAServers(plane), services: newRouterServices(plane),
		ready: map[string]bool{}, vmPorts: map[string][]string{}, report: newNetReport()}
}

// changed asks for an Apply soon.
func (n *netController) changed() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *netController) run(ctx context.Context) error {
	if err := n.a.cache.waitSynced(ctx); err != nil {
		return nil
	}
	// VMs moving away that still run here keep their ports: know them
	// before the first Apply (migrateadopt.go).
	select {
	case <-ctx.Done():
		return nil
	case <-n.a.adopted:
	}
	defer n.dhcp.stopAll()
	defer n.ra.stopAll()
	defer n.services.stopAll()
	t := time.NewTicker(netResync)
	defer t.Stop()
	for {
		if n.apply(ctx) {
			n.failures = 0
			select {
			case <-ctx.Done():
				return nil
			case <-n.kick:
			case <-n.plane.Changes():
			case <-t.C:
			}
		} else {
			// A failed Apply is tried again after a back-off, not at
			// every change the failure itself causes on the host; a
			// change in the API (perhaps the fix) tries at once.
			n.failures++
			select {
			case <-ctx.Done():
				return nil
			case <-n.kick:
			case <-time.After(netBackoff(n.failures)):
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(netDebounce):
		}
	}
}

// inputs reads what hostNetState needs from the cache.
func (n *netController) inputs() netInputs {
	c := n.a.cache
	in := netInputs{Host: n.a.cfg.Name, Underlay: n.a.underlay, HostAddresses: map[string]netip.Addr{},
		ExternalDevices: n.a.cfg.ExternalInterfaces}
	for _, o := range c.vms.List() {
		in.VMs = append(in.VMs, o.(*api.VirtualMachine))
	}
	for _, o := range c.networks.List() {
		in.Networks = append(in.Networks, o.(*api.Network))
	}
	for _, o := range c.subnets.List() {
		in.Subnets = append(in.Subnets, o.(*api.Subnet))
	}
	for _, o := range c.floatingIPs.List() {
		in.FloatingIPs = append(in.FloatingIPs, o.(*api.FloatingIP))
	}
	for _, o := range c.externalNetworks.List() {
		in.ExternalNetworks = append(in.ExternalNetworks, o.(*api.ExternalNetwork))
	}
	for _, o := range c.sshKeys.List() {
		in.SSHKeys = append(in.SSHKeys, o.(*api.SSHKey))
	}
	in.FoundDevices = foundExternalDevices(in.ExternalNetworks, in.ExternalDevices)
	in.Leaving = n.leaving.update(in.Host, in.VMs)
	for _, o := range c.securityGroups.List() {
		in.SecurityGroups = append(in.SecurityGroups, o.(*api.SecurityGroup))
	}
	for _, o := range c.hosts.List() {
		h := o.(*api.Host)
		if a, err := netip.ParseAddr(h.Spec.Address); err == nil {
			in.HostAddresses[h.Metadata.Name] = a.Unmap()
		}
	}
	return in
}

// apply computes the state and applies it, and says what went wrong;
// false if the Apply failed.
func (n *netController) apply(ctx context.Context) bool {
	in := n.inputs()
	st := hostNetState(in)
	err := n.plane.Apply(ctx, st.State)
	var issues []netIssue
	for _, p := range st.Problems {
		issues = append(issues, netIssue{api.NetworkInvalid, p.String()})
	}
	if err != nil {
		for _, e := range unjoin(err) {
			issues = append(issues, netIssue{api.NetworkApplyFailed, "applying the host's network state: " + e.Error()})
		}
	}
	failed := map[uint32]bool{}
	var fe dataplane.FieldErrors
	switch {
	case err == nil:
	case errors.As(err, &fe):
		// hostNetState makes only valid states but for what needs the
		// host (the underlay device): nothing was changed.
		for _, nw := range st.State.Networks {
			failed[nw.VNI] = true
		}
	default:
		for _, e := range unjoin(err) {
			var ne *dataplane.NetworkError
			if errors.As(e, &ne) {
				failed[ne.VNI] = true
			}
		}
	}
	n.mu.Lock()
	ready := map[string]bool{}
	for _, nw := range st.State.Networks {
		if failed[nw.VNI] {
			continue
		}
		for _, p := range nw.Ports {
			ready[p.Name] = true
		}
	}
	// A VM whose ports changed or became ready may start now.
	var wake []string
	for key, ports := range st.Ports {
		old := n.vmPorts[key]
		if !slices.Equal(ports, old) || hasAll(ports, ready) != hasAll(old, n.ready) {
			wake = append(wake, key)
		}
	}
	n.ready, n.vmPorts = ready, st.Ports
	n.mu.Unlock()
	for _, key := range wake {
		n.a.vms.ctl.EnqueueNow(key)
	}
	// The metadata and DNS tables before the leases: a VM asks for its
	// metadata the moment it has its address.
	issues = append(issues, servicesIssues(n.services.sync(ctx, in, st, failed))...)
	for key, err := range n.dhcp.sync(ctx, st, failed) {
		issues = append(issues, netIssue{api.NetworkDHCPFailed, fmt.Sprintf("subnet %s: its DHCP server cannot start: %v", key, err)})
	}
	n.ra.sync(ctx, st, failed)
	n.say(ctx, issues)
	return err == nil
}

// servicesIssues says, per network, that its DNS and metadata servers
// could not start, and why.
func servicesIssues(errs map[string]error) []netIssue {
	var out []netIssue
	for _, key := range slices.Sorted(maps.Keys(errs)) {
		out = append(out, netIssue{api.NetworkDNSFailed, fmt.Sprintf("network %s: its DNS and metadata servers cannot start: %v", key, errs[key])})
	}
	return out
}

// ports says what a VM's NICs are plugged into: the tap of each NIC that
// is on a network ("" for a NIC on none), and why not when a port is not
// there yet.
func (n *netController) ports(vm *api.VirtualMachine) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	taps := make([]string, len(vm.Spec.NICs))
	got := n.vmPorts[vmKey(vm)]
	for i, nic := range vm.Spec.NICs {
		if nic.Network == "" {
			continue
		}
		if i >= len(vm.Status.Interfaces) || vm.Status.Interfaces[i].MAC == "" {
			return nil, waitingFor(api.ReasonWaitingForNetwork, "spec.nics[%d]: the server has not allocated its address yet", i)
		}
		if i >= len(got) || got[i] == "" || !n.ready[got[i]] {
			return nil, waitingFor(api.ReasonWaitingForNetwork, "spec.nics[%d]: waiting for its port on network %s on this host (if it lasts, the host's NetworkReady condition tells a cluster admin why)", i, nic.Network)
		}
		taps[i] = got[i]
	}
	return taps, nil
}

func hasAll(ports []string, ready map[string]bool) bool {
	for _, p := range ports {
		if p != "" && !ready[p] {
			return false
		}
	}
	return true
}

// say publishes the Host's NetworkReady condition (with the next
// heartbeat) and says each new problem once, in the log and as an event
// on the Host.
func (n *netController) say(ctx context.Context, issues []netIssue) {
	slices.SortStableFunc(issues, func(a, b netIssue) int { return strings.Compare(a.Reason, b.Reason) })
	cond, fresh, resolved := n.report.update(issues, time.Now().UTC())
	if n.a.checks != nil {
		n.a.checks.setCondition(cond)
	}
	host := n.hostObject()
	for _, i := range fresh {
		slog.Warn("tenant networks on this host", "reason", i.Reason, "problem", i.Message)
		if host != nil && n.a.rec != nil {
			n.a.rec.Eventf(ctx, host, api.EventWarning, i.Reason, "%s", i.Message)
		}
	}
	if resolved {
		slog.Info("tenant networks on this host: every problem is resolved")
		if host != nil && n.a.rec != nil {
			n.a.rec.Eventf(ctx, host, api.EventNormal, api.NetworkApplied, "every tenant network problem on this host is resolved")
		}
	}
}

// hostObject is this host's Host, as the cache has it.
func (n *netController) hostObject() *api.Host {
	for _, o := range n.a.cache.hosts.List() {
		if h := o.(*api.Host); h.Metadata.Name == n.a.cfg.Name {
			return h
		}
	}
	return nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// wireNetwork registers the network controller's interest: any change of
// the kinds the state is computed from (and of SSHKeys, which the
// metadata service hands out), but a VM's only when it can change the
// state (placement, NICs, interfaces, coming or going) or its metadata
// (spec.cloudInit), not its status heartbeat.
func (a *Agent) wireNetwork() {
	c := a.cache
	kick := func(client.Change) { a.net.changed() }
	c.networks.OnUpdate(kick)
	c.subnets.OnUpdate(kick)
	c.floatingIPs.OnUpdate(kick)
	c.externalNetworks.OnUpdate(kick)
	c.securityGroups.OnUpdate(kick)
	c.sshKeys.OnUpdate(kick)
	c.hosts.OnUpdate(func(ch client.Change) {
		if ch.Old == nil || ch.New == nil || ch.Old.(*api.Host).Spec.Address != ch.New.(*api.Host).Spec.Address {
			a.net.changed()
		}
	})
	c.vms.OnUpdate(func(ch client.Change) {
		if ch.Old == nil || ch.New == nil || vmNetworking(ch.Old.(*api.VirtualMachine)) != vmNetworking(ch.New.(*api.VirtualMachine)) ||
			!reflect.DeepEqual(ch.Old.(*api.VirtualMachine).Spec.CloudInit, ch.New.(*api.VirtualMachine).Spec.CloudInit) {
			a.net.changed()
		}
	})
}

// vmNetworking is what of a VM the host's network state depends on.
func vmNetworking(vm *api.VirtualMachine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %d", vm.Spec.Host, vm.Metadata.UID, len(vm.Spec.NICs))
	for _, nic := range vm.Spec.NICs {
		fmt.Fprintf(&b, " %v", nic.SecurityGroups)
	}
	for _, i := range vm.Status.Interfaces {
		fmt.Fprintf(&b, " %s/%s/%s/%s", i.Network, i.Subnet, i.IP, i.MAC)
	}
	return b.String()
}
