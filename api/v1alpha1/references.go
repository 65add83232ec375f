package v1alpha1

import (
	"fmt"
	"slices"
	"strconv"
)

// Objects name other objects: a VM its networks, subnets, images, volumes,
// SSH keys and security groups; a Subnet its network; a FloatingIP its
// external network and VM. A name may be written before the object it
// names exists (files are applied in any order, and a controller may be a
// moment behind), so a reference that does not resolve is not an error:
// the server warns the writer (a Warning header) and a controller keeps
// the ResolvedRefs condition of the referring object, both worded by
// ResolveReferences so they say the same thing.

// ConditionResolvedRefs is True when every object an object names exists,
// and False, naming the missing ones, when some do not.
const ConditionResolvedRefs = "ResolvedRefs"

// Reasons of the ResolvedRefs condition.
const (
	ReasonResolved      = "Resolved"
	ReasonMissingObject = "MissingObject"
)

// Reference is one name an object gives another object.
type Reference struct {
	// Field is the path of the name in the object: spec.nics[0].network.
	Field string
	// Kind of the object named. A name of a tenant-scoped kind is looked up
	// in the referring object's tenant; of a shared-readable kind (Image),
	// there and then among the shared ones; of a cluster-scoped kind, in
	// the cluster.
	Kind string
	Name string
	// OnNetwork, for a Subnet a NIC names, is the network the NIC is on,
	// which the subnet must be on too.
	OnNetwork string
}

// Referrer is a spec that names other objects.
type Referrer interface {
	References() []Reference
}

// Lookup finds an object by kind, tenant ("" for cluster-level objects)
// and name; ok is false when there is none.
type Lookup func(kind, tenant, name string) (obj Object, ok bool, err error)

// Unresolved is a reference that does not resolve, and why.
type Unresolved struct {
	Reference
	// Message says what is missing: `network "lan" does not exist in
	// tenant demo`.
	Message string
}

// String is the field and the message, as warnings show it.
func (u Unresolved) String() string { return u.Field + ": " + u.Message }

// ReferencesOf returns the references of obj (none if its spec names no
// other object).
func ReferencesOf(obj Object) []Reference {
	if r, ok := obj.SpecAny().(Referrer); ok {
		return r.References()
	}
	return nil
}

// ResolveReferences looks up every reference of obj and returns those that
// do not resolve, in the order of its spec. allowed, if set, is asked
// before each look-up and a reference it refuses is left out: the server
// tells a writer only about objects the writer may read.
func ResolveReferences(obj Object, lookup Lookup, allowed func(kind, tenant, name string) bool) ([]Unresolved, error) {
	tenant := obj.GetMetadata().Tenant
	var out []Unresolved
	for _, ref := range ReferencesOf(obj) {
		k, ok := kinds[ref.Kind]
		if !ok || ref.Name == "" {
			continue
		}
		// Where the name is looked up, in order, of the places the
		// caller may know about.
		var where []string
		switch {
		case k.Scope == ClusterScoped:
			where = []string{""}
		case k.SharedReadable && tenant != "":
			where = []string{tenant, ""}
		default:
			where = []string{tenant}
		}
		if allowed != nil {
			where = slices.DeleteFunc(where, func(t string) bool { return !allowed(ref.Kind, t, ref.Name) })
		}
		if len(where) == 0 {
			continue
		}
		var found Object
		for _, t := range where {
			o, ok, err := lookup(ref.Kind, t, ref.Name)
			if err != nil {
				return nil, err
			}
			if ok {
				found = o
				break
			}
		}
		if found == nil {
			out = append(out, Unresolved{Reference: ref, Message: missingMessage(k, ref.Name, where)})
			continue
		}
		if sn, ok := found.(*Subnet); ok && ref.OnNetwork != "" && sn.Spec.Network != ref.OnNetwork {
			out = append(out, Unresolved{Reference: ref, Message: fmt.Sprintf("subnet %q is on network %q, not %q", ref.Name, sn.Spec.Network, ref.OnNetwork)})
		}
	}
	return out, nil
}

// nouns are how messages name the kinds references point at.
var nouns = map[string]string{
	"Network": "network", "Subnet": "subnet", "Image": "image", "Volume": "volume", "Snapshot": "snapshot",
	"SSHKey": "SSH key", "SecurityGroup": "security group", "ExternalNetwork": "external network",
	"VirtualMachine": "VM",
}

// MissingMessage says that no object of kind is called name where an
// object of tenant would find one: `image "x" does not exist in tenant
// demo or among the shared images`. It is worded as the ResolvedRefs
// condition and the write warnings are, for others who find a name
// missing (the agent).
func MissingMessage(kind, tenant, name string) string {
	k, ok := kinds[kind]
	if !ok {
		return kind + " " + strconv.Quote(name) + " does not exist"
	}
	where := []string{tenant}
	switch {
	case k.Scope == ClusterScoped:
		where = []string{""}
	case k.SharedReadable && tenant != "":
		where = []string{tenant, ""}
	}
	return missingMessage(k, name, where)
}

func missingMessage(k *KindInfo, name string, where []string) string {
	noun := nouns[k.Kind]
	if noun == "" {
		noun = k.Kind
	}
	msg := noun + " " + strconv.Quote(name) + " does not exist"
	switch {
	case len(where) == 2:
		msg += " in tenant " + where[0] + " or among the shared " + k.Plural
	case where[0] != "":
		msg += " in tenant " + where[0]
	}
	return msg
}

// ResolvedCondition is the ResolvedRefs condition for a set of unresolved
// references (none: True). It carries no observedGeneration: it changes
// only when what the names resolve to changes, so a spec change that
// leaves them alone (a VM stopped) costs no status write that would race
// the agent's.
func ResolvedCondition(missing []Unresolved) Condition {
	if len(missing) == 0 {
		return Condition{Type: ConditionResolvedRefs, Status: ConditionTrue, Reason: ReasonResolved,
			Message: "every object it names exists"}
	}
	msg := ""
	for i, u := range missing {
		if i > 0 {
			msg += "; "
		}
		msg += u.String()
	}
	return Condition{Type: ConditionResolvedRefs, Status: ConditionFalse, Reason: ReasonMissingObject, Message: msg}
}

// References of a VM: the images of its kernel and initrd, the networks,
// subnets and security groups of its NICs, the volumes and images of its
// disks, and its SSH keys.
func (s *VirtualMachineSpec) References() []Reference {
	return s.references("spec")
}

func (s *VirtualMachineSpec) references(path string) []Reference {
	var out []Reference
	for _, f := range []struct {
		name string
		file *BootFile
	}{{"kernel", s.Boot.Kernel}, {"initrd", s.Boot.Initrd}} {
		if f.file != nil && f.file.Image != "" {
			out = append(out, Reference{Field: path + ".boot." + f.name + ".image", Kind: "Image", Name: f.file.Image})
		}
	}
	for i, n := range s.NICs {
		np := fmt.Sprintf("%s.nics[%d]", path, i)
		out = append(out, Reference{Field: np + ".network", Kind: "Network", Name: n.Network})
		if n.Subnet != "" {
			out = append(out, Reference{Field: np + ".subnet", Kind: "Subnet", Name: n.Subnet, OnNetwork: n.Network})
		}
		for j, g := range n.SecurityGroups {
			out = append(out, Reference{Field: fmt.Sprintf("%s.securityGroups[%d]", np, j), Kind: "SecurityGroup", Name: g})
		}
	}
	for i, d := range s.Disks {
		dp := fmt.Sprintf("%s.disks[%d]", path, i)
		if d.Volume != "" {
			out = append(out, Reference{Field: dp + ".volume", Kind: "Volume", Name: d.Volume})
		}
		if d.Image != "" {
			out = append(out, Reference{Field: dp + ".image", Kind: "Image", Name: d.Image})
		}
	}
	for i, k := range s.CloudInit.SSHKeys {
		out = append(out, Reference{Field: fmt.Sprintf("%s.cloudInit.sshKeys[%d]", path, i), Kind: "SSHKey", Name: k})
	}
	return out
}

// References of a set are those of its template.
func (s *VirtualMachineSetSpec) References() []Reference {
	return s.Template.Spec.references("spec.template.spec")
}

// References of a Subnet: its network.
func (s *SubnetSpec) References() []Reference {
	return []Reference{{Field: "spec.network", Kind: "Network", Name: s.Network}}
}

// References of a FloatingIP: its external network and the VM it points at.
func (s *FloatingIPSpec) References() []Reference {
	out := []Reference{{Field: "spec.externalNetwork", Kind: "ExternalNetwork", Name: s.ExternalNetwork}}
	if s.Target != nil {
		out = append(out, Reference{Field: "spec.target.vm", Kind: "VirtualMachine", Name: s.Target.VM})
	}
	return out
}

// References of a Network: its external network, if any.
func (s *NetworkSpec) References() []Reference {
	if s.ExternalNetwork == "" {
		return nil
	}
	return []Reference{{Field: "spec.externalNetwork", Kind: "ExternalNetwork", Name: s.ExternalNetwork}}
}

// References of a Volume: the image or snapshot it starts from.
func (s *VolumeSpec) References() []Reference {
	var out []Reference
	if s.Source.Image != "" {
		out = append(out, Reference{Field: "spec.source.image", Kind: "Image", Name: s.Source.Image})
	}
	if s.Source.Snapshot != "" {
		out = append(out, Reference{Field: "spec.source.snapshot", Kind: "Snapshot", Name: s.Source.Snapshot})
	}
	return out
}

// References of a Snapshot: its volume.
func (s *SnapshotSpec) References() []Reference {
	return []Reference{{Field: "spec.volume", Kind: "Volume", Name: s.Volume}}
}
