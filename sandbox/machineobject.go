package sandbox

import (
	"context"
	"fmt"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// MachineLabel marks the Machines `hearth sandbox machine add` makes, with
// the value MachineLabelValue: examples/sandbox/machines.yaml's profile
// selects them by it.
const (
	MachineLabel      = "hearth.dev/sandbox"
	MachineLabelValue = "machine"
)

// apiTimeout bounds each conversation with the sandbox's server about a
// machine.
const apiTimeout = 30 * time.Second

// machineClient is the sandbox administrator's client, or nil when the
// sandbox has no server (its network was built alone, as tests do).
func machineClient(st *State) (*client.Client, error) {
	if st.AdminConfig == "" {
		return nil, nil
	}
	c, err := client.FromConfig(st.AdminConfig, "")
	if err != nil {
		return nil, fmt.Errorf("the sandbox's admin config: %w", err)
	}
	return c, nil
}

// registerMachine makes the Machine object of m, named after it and
// labelled MachineLabel, before m first network-boots: the boot service
// then recognises m by its MAC, so `hearth describe machine NAME` finds
// it, where a discovered machine would be named mac-…. The sandbox's
// cluster admin writes it, as a person declares a machine up front; the
// boot service's own powers stay what they are (it creates only bare,
// unapproved machines).
//
// A Machine of that name and MAC already there (declared by hand, say) is
// kept, and labelled. A Machine of that name with another MAC, or another
// Machine with m's MAC, is an error that says what to do, since the boot
// service would mistake one for the other. It reports whether it created
// the Machine, so a failed add can delete it again.
func registerMachine(ctx context.Context, c *client.Client, m Machine, site string) (created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	objs, _, err := c.List(ctx, "Machine", "", client.ListOptions{})
	if err != nil {
		return false, fmt.Errorf("listing the server's Machines: %w", err)
	}
	for _, o := range objs {
		other := o.(*api.Machine)
		switch {
		case other.Metadata.Name == m.Name && !strings.EqualFold(other.Spec.MAC, m.MAC):
			return false, fmt.Errorf("the server has a Machine %s with MAC %s, not this machine's %s: delete it (hearth delete machine %s), give --mac %s, or choose another name",
				m.Name, other.Spec.MAC, m.MAC, m.Name, other.Spec.MAC)
		case other.Metadata.Name != m.Name && strings.EqualFold(other.Spec.MAC, m.MAC):
			return false, fmt.Errorf("the server's Machine %s has MAC %s already: delete it (hearth delete machine %s) or give this machine another --mac",
				other.Metadata.Name, m.MAC, other.Metadata.Name)
		}
	}
	// The first step of its boot timeline (where a discovered machine's
	// is the boot service's Discovered).
	added := func(obj api.Object, how string) {
		client.NewRecorder(c, "sandbox").Eventf(ctx, obj, api.EventNormal, "Added",
			"%s by hearth sandbox machine add: QEMU with %s firmware and MAC %s on the sandbox's provisioning network, powered on next", how, m.Firmware, m.MAC)
	}
	if o, err := c.Get(ctx, "Machine", "", m.Name); err == nil {
		if o.GetMetadata().Labels[MachineLabel] != MachineLabelValue {
			patch := map[string]any{"metadata": map[string]any{"labels": map[string]string{MachineLabel: MachineLabelValue}}}
			if o, err = c.Patch(ctx, "Machine", "", m.Name, patch, false); err != nil {
				return false, fmt.Errorf("labelling Machine %s: %w", m.Name, err)
			}
		}
		added(o, "kept (it was there already, with this MAC) and labelled "+MachineLabel+"="+MachineLabelValue)
		return false, nil
	} else if !api.IsNotFound(err) {
		return false, fmt.Errorf("reading Machine %s: %w", m.Name, err)
	}
	obj := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: m.Name, Labels: map[string]string{MachineLabel: MachineLabelValue}},
		Spec: api.MachineSpec{MAC: m.MAC, Architecture: api.ArchX86_64, Site: site,
			Description: fmt.Sprintf("sandbox machine (QEMU, %s); console %s", m.Firmware, m.Console())}}
	out, err := c.Create(ctx, obj)
	if err != nil {
		return false, fmt.Errorf("creating Machine %s: %w", m.Name, err)
	}
	added(out, "created")
	return true, nil
}

// unregisterMachine deletes the Machine objects of a machine that is
// gone: every one with its MAC (its own, and one the boot service
// discovered if it booted before it had one). A machine that is unplugged
// does not report again, so its Machine would otherwise stay in its last
// phase (Ready) for ever.
func unregisterMachine(ctx context.Context, c *client.Client, m Machine) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	objs, _, err := c.List(ctx, "Machine", "", client.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing the server's Machines: %w", err)
	}
	for _, o := range objs {
		if !strings.EqualFold(o.(*api.Machine).Spec.MAC, m.MAC) {
			continue
		}
		name := o.GetMetadata().Name
		if _, err := c.Delete(ctx, "Machine", "", name); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("deleting Machine %s: %w", name, err)
		}
	}
	return nil
}
