package auth

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Verb is what a request does.
type Verb string

const (
	Get          Verb = "get"
	List         Verb = "list"
	Watch        Verb = "watch"
	Create       Verb = "create"
	Update       Verb = "update"
	Delete       Verb = "delete"
	UpdateStatus Verb = "update-status"
)

func (v Verb) write() bool { return v != Get && v != List && v != Watch }

// Request is what an authorization decision is about.
type Request struct {
	Verb Verb
	Kind *api.KindInfo
	// Tenant is the tenant the request addresses ("" for cluster-scoped
	// objects, the cluster-level objects of a TenantOptional kind, or a
	// list across all tenants when AllTenants is set).
	Tenant     string
	AllTenants bool
	Name       string
	// Stored is the object as stored, for requests on an existing object;
	// New is the object being written. Either may be nil.
	Stored, New api.Object
	// Involved is, for an Event a host or boot service creates, the object
	// the event is about as stored (nil if there is none).
	Involved api.Object
	// PoolKeyring is, for a Get of a Secret, whether a StoragePool names
	// it as its keyringSecret: the one Secret a host may read, as it
	// needs the key to open the pool's volumes.
	PoolKeyring bool
}

// Authorize returns nil if p may do r, or a Forbidden error that says what
// was refused. Tenant isolation is decided here and nowhere else.
func Authorize(p *Principal, r Request) error {
	if p.Join {
		return forbid(p, r, "a join token may only register a host")
	}
	if r.Kind.Confidential && p.Host != "" && r.Verb == Get && r.PoolKeyring {
		// A host opens the volumes of every storage pool (a VM on shared
		// storage may start on any host), so it reads the pools' keys,
		// one by one, and nothing else: not a BMC password, not a list.
		return nil
	}
	if r.Kind.Confidential && (p.HostCredential() || p.Role != api.RoleClusterAdmin) {
		// Power drivers run in the CLI, with the person's own
		// credential, so no host credential reads Secrets other than
		// storage pools' keys (above): a host is not trusted with the
		// keys to every other machine.
		return forbid(p, r, r.Kind.Plural+" are read and written by cluster admins only")
	}
	if p.Host != "" {
		return authorizeHost(p, r)
	}
	if p.Boot != "" {
		return authorizeBoot(p, r)
	}
	if p.Role == api.RoleClusterAdmin {
		return nil
	}
	if r.Verb.write() && p.Role == api.RoleViewer {
		return forbid(p, r, "viewers may not change anything")
	}
	if r.Verb == UpdateStatus {
		// Status is what Hearth observed and decided (an image's checksum,
		// a VM's phase): hosts, boot services and controllers write it,
		// never the people whose objects it describes.
		return forbid(p, r, "status is written by hosts, boot services and controllers only")
	}
	if p.Tenant == "" {
		// A cluster-wide viewer reads everything.
		if p.Role == api.RoleViewer {
			return nil
		}
		return forbid(p, r, "no role grants it")
	}
	// From here p is a user of one tenant.
	if r.AllTenants {
		return forbid(p, r, "only cluster-wide users may list across tenants")
	}
	switch r.Kind.Kind {
	case "Tenant":
		if !r.Verb.write() && (r.Name == p.Tenant || r.Verb == List || r.Verb == Watch) {
			return nil // lists and watches are filtered to their own tenant
		}
		return forbid(p, r, "tenant users may only read their own Tenant")
	case "User":
		return authorizeUserAdmin(p, r)
	}
	switch r.Kind.Scope {
	case api.ClusterScoped:
		return forbid(p, r, r.Kind.Kind+" is cluster infrastructure")
	case api.TenantOptional:
		if r.Tenant == "" {
			if r.Kind.SharedReadable && !r.Verb.write() {
				return nil
			}
			return forbid(p, r, "cluster-level "+r.Kind.Plural+" are managed by cluster admins")
		}
	}
	if r.Tenant != p.Tenant {
		return forbid(p, r, "it belongs to another tenant")
	}
	return nil
}

// authorizeUserAdmin lets tenant admins manage the users of their tenant and
// every user read their own User.
func authorizeUserAdmin(p *Principal, r Request) error {
	if !r.Verb.write() && r.Name == p.Name {
		return nil
	}
	if p.Role != api.RoleTenantAdmin {
		return forbid(p, r, "only tenant admins manage users")
	}
	if r.Verb == List || r.Verb == Watch {
		return nil // filtered to the admin's tenant by the server
	}
	for _, o := range []api.Object{r.Stored, r.New} {
		if o == nil {
			continue
		}
		u := o.(*api.User)
		if u.Spec.Tenant != p.Tenant {
			return forbid(p, r, "the user belongs to another tenant")
		}
		if u.Spec.Role == api.RoleClusterAdmin {
			return forbid(p, r, "tenant admins may not grant cluster-admin")
		}
	}
	if r.Stored == nil && r.New == nil && r.Verb != Create {
		return forbid(p, r, "the user belongs to another tenant")
	}
	return nil
}

// VisibleTo reports whether an object may appear in p's lists and watches.
// It is the filter for requests Authorize allowed as a whole.
func VisibleTo(p *Principal, obj api.Object) bool {
	if k := api.KindOf(obj); k != nil && k.Confidential {
		return !p.HostCredential() && !p.Join && p.Role == api.RoleClusterAdmin
	}
	if p.Host != "" {
		return hostReads(p, obj)
	}
	if p.GlobalReader() {
		return obj.GetTypeMeta().Kind != "User" || !p.HostCredential()
	}
	m := obj.GetMetadata()
	switch obj.GetTypeMeta().Kind {
	case "Tenant":
		return m.Name == p.Tenant
	case "User":
		return obj.(*api.User).Spec.Tenant == p.Tenant && (p.Role == api.RoleTenantAdmin || m.Name == p.Name)
	}
	k, err := api.KindByName(obj.GetTypeMeta().Kind)
	if err != nil {
		return false
	}
	switch k.Scope {
	case api.ClusterScoped:
		return false
	case api.TenantOptional:
		if m.Tenant == "" {
			return k.SharedReadable
		}
	}
	return m.Tenant == p.Tenant
}

// authorizeHost lets an agent read what it needs and write only the status
// of its own Host and of objects placed on it, and events about them.
// A Host's spec, labels and annotations are the administrator's: a host
// that could write them could un-cordon itself, raise its overcommit or
// take labels that attract VMs. The Host itself is made by /join.
func authorizeHost(p *Principal, r Request) error {
	if r.Kind.Kind == "User" {
		return forbid(p, r, "hosts do not read users")
	}
	if !r.Verb.write() {
		return nil
	}
	switch {
	case r.Kind.Kind == "Event" && (r.Verb == Create || r.Verb == Update):
		return authorizeEvent(p, r, func(obj api.Object) string {
			k, err := api.KindByName(obj.GetTypeMeta().Kind)
			switch {
			case err != nil:
				return "it is about an object of no known kind"
			case k.Kind == "Image":
				return "" // hosts fetch images and may say how it went
			case k.Kind == "VirtualMachine" && obj.(*api.VirtualMachine).Status.Host == p.Host:
				// A VM moving away runs here until its destination has it:
				// this host says how sending it went.
				return ""
			case k.PlacedOn == nil || k.PlacedOn(obj) != p.Host:
				return "a host records events only about its own Host, objects placed on it, VMs that run on it and Images"
			}
			return ""
		})
	case r.Kind.Kind == "Host" && r.Verb != UpdateStatus:
		return forbid(p, r, "a host writes only its own Host's status: its spec and metadata are the administrator's, and /join makes it")
	case r.Kind.Kind == "StoragePool" && r.Verb == UpdateStatus && r.Stored != nil && r.New != nil:
		// Hosts reach shared pools, the server does not: a host reports
		// a pool's size and use (api.StoragePoolUsage), and nothing else.
		o, n := r.Stored.(*api.StoragePool).Status, r.New.(*api.StoragePool).Status
		o.Capacity, o.Used, o.Available = n.Capacity, n.Used, n.Available
		if !reflect.DeepEqual(o, n) {
			return forbid(p, r, "a host may write only status.capacity, used and available of a StoragePool")
		}
		return nil
	case r.Kind.Kind == "Image" && r.Verb == UpdateStatus && r.Stored != nil && r.New != nil:
		if why := imageStatusByHost(p.Host, r.Stored.(*api.Image), r.New.(*api.Image)); why != "" {
			return forbid(p, r, why)
		}
		return nil
	case r.Verb == UpdateStatus && r.Kind.PlacedOn != nil && r.Stored != nil:
		if vm, ok := r.Stored.(*api.VirtualMachine); ok && r.Kind.PlacedOn(r.Stored) != p.Host && vm.Status.Migration != nil && vm.Status.Migration.From == p.Host {
			if cur, ok := r.New.(*api.VirtualMachine); !ok {
				return forbid(p, r, "it is not placed on this host")
			} else if why := migrationGivenUp(p.Host, vm, cur); why != "" {
				return forbid(p, r, why)
			}
			return nil
		}
		if r.Kind.PlacedOn(r.Stored) != p.Host {
			return forbid(p, r, "it is not placed on this host")
		}
		if r.New != nil && r.Kind.PlacedOn(r.New) != p.Host {
			return forbid(p, r, "a host may not move an object to another host")
		}
		if vm, ok := r.New.(*api.VirtualMachine); ok && !reflect.DeepEqual(vm.Status.Failover, r.Stored.(*api.VirtualMachine).Status.Failover) {
			// A failover's record is what lets the server move a VM off
			// its host without a live migration: the server's to write.
			return forbid(p, r, "status.failover is written by the server's failover controller only")
		}
		return nil
	}
	return forbid(p, r, "hosts may only write the status of objects placed on them")
}

// authorizeBoot lets a boot service read what it needs, discover Machines,
// write what it observes of them, and record their timelines.
func authorizeBoot(p *Principal, r Request) error {
	if r.Kind.Kind == "User" {
		return forbid(p, r, "boot services do not read users")
	}
	if !r.Verb.write() {
		return nil
	}
	switch {
	case r.Kind.Kind == "Event" && (r.Verb == Create || r.Verb == Update):
		return authorizeEvent(p, r, func(obj api.Object) string {
			if obj.GetTypeMeta().Kind != "Machine" {
				return "a boot service records events only about Machines"
			}
			return ""
		})
	case r.Kind.Kind == "Machine" && r.Verb == Create:
		return authorizeDiscovery(p, r)
	case r.Kind.Kind == "Machine" && r.Verb == UpdateStatus:
		return authorizeMachineFacts(p, r)
	}
	return forbid(p, r, "boot services may only discover Machines and write what they observe of them")
}

// authorizeEvent lets a host credential record an event about an object
// it looks after (about says why obj is not one, or "") and change the
// events it recorded. An event names its recorder as its source and lives
// in the tenant of the object it is about, so a host can neither speak
// for the server nor write into a tenant that has nothing on it.
func authorizeEvent(p *Principal, r Request, about func(obj api.Object) string) error {
	if r.Verb == Update {
		// A repeated event is recorded by bumping its count: a host may
		// change the events it wrote, and keep them its own and about the
		// same object.
		old, ok1 := r.Stored.(*api.Event)
		cur, ok2 := r.New.(*api.Event)
		switch {
		case !ok1 || !ok2 || old.Spec.Source != p.Name:
			return forbid(p, r, "it may only change events it recorded")
		case cur.Spec.Source != old.Spec.Source || cur.Spec.InvolvedObject != old.Spec.InvolvedObject:
			return forbid(p, r, "an event's source and involvedObject do not change")
		}
		return nil
	}
	ev, ok := r.New.(*api.Event)
	if !ok {
		return forbid(p, r, "it may only create events")
	}
	ref := ev.Spec.InvolvedObject
	switch {
	case ev.Spec.Source != p.Name:
		return forbid(p, r, "it records events under its own name: spec.source must be "+p.Name)
	case ev.Metadata.Tenant != ref.Tenant:
		return forbid(p, r, "an event belongs to the tenant of the object it is about: metadata.tenant must be spec.involvedObject.tenant")
	case r.Involved == nil:
		return forbid(p, r, "it is about "+ref.Kind+" "+ref.Name+", which does not exist")
	case ref.UID != "" && ref.UID != r.Involved.GetMetadata().UID:
		return forbid(p, r, "it is about another "+ref.Kind+" "+ref.Name+" (spec.involvedObject.uid differs)")
	}
	if why := about(r.Involved); why != "" {
		return forbid(p, r, why)
	}
	return nil
}

// imageStatusByHost says what is wrong with a host's write of an Image's
// status, or "" if nothing is. Images are not placed on a host, but every
// host that caches one reports its copy: a host may change its own entry
// of status.hosts and nobody else's, and may fill in what the first
// download learns about the image (checksum, size, virtual size, and
// phase Ready once its own copy is ready), but not change it once set.
// The whole new status is compared, so a merge patch that rewrites the
// list is checked as strictly as any other write.
func imageStatusByHost(host string, old, cur *api.Image) string {
	const only = "a host may only write its own entry of status.hosts and fill in status.checksum, size and virtualSize"
	others := func(st api.ImageStatus) (rest []api.ImageHostStatus, own []api.ImageHostStatus) {
		for _, h := range st.Hosts {
			if h.Host == host {
				own = append(own, h)
			} else {
				rest = append(rest, h)
			}
		}
		return rest, own
	}
	oldRest, _ := others(old.Status)
	curRest, own := others(cur.Status)
	switch {
	case !reflect.DeepEqual(oldRest, curRest):
		return only + ": it changes other hosts' entries"
	case len(own) > 1:
		return "status.hosts has more than one entry for " + host
	case !reflect.DeepEqual(old.Status.Conditions, cur.Status.Conditions) || old.Status.ObservedGeneration != cur.Status.ObservedGeneration:
		return only + ": it changes conditions"
	}
	o, c := old.Status, cur.Status
	if cur.Spec.Source.Upload && (o.Checksum != c.Checksum || o.Size != c.Size) {
		// The server's upload handler records what it received; a host
		// naming other bytes would hand them to whoever reads the image.
		return "status.checksum and size of an uploaded image are the server's to record from the upload"
	}
	fixed := func(a, b any, zero any) bool { return a != b && a != zero }
	if fixed(o.Checksum, c.Checksum, "") || fixed(o.Size, c.Size, api.Bytes(0)) || fixed(o.VirtualSize, c.VirtualSize, api.Bytes(0)) {
		return only + ": checksum, size and virtualSize cannot change once set"
	}
	if want := cur.Spec.Source.Checksum; want != "" && c.Checksum != "" && c.Checksum != want {
		return "status.checksum " + c.Checksum + " differs from spec.source.checksum " + want
	}
	if o.Phase != c.Phase {
		if c.Phase != api.ImageReady || c.Checksum == "" || len(own) == 0 || own[0].Phase != api.ImageReady {
			return only + ": it may set phase only to Ready, with the checksum, once its own copy is Ready"
		}
	}
	return ""
}

// A boot service (`hearth boot`) needs two writes on Machines, and no
// more:
//
//   - Create the Machine for a MAC it has not seen (discovery). The new
//     machine must be unapproved, name no profile, carry no labels,
//     annotations, finalizers or owners, ask for no reinstall, and have no
//     power settings: approval, the choice of profile (which labels
//     steer, and which may wipe a disk) and BMC credentials or webhook URLs
//     (which the server would call) are a person's to give.
//   - Write the facts of the machine's status it observed (machineFacts):
//     when it last saw and booted it, its addresses, SSH host keys, DHCP
//     identity, installer success and power state. Phase, conditions and
//     the matched profile are the machine controller's, which derives them
//     from these facts and the spec.
//
// Machines have no host they are placed on, so any boot service may do
// this for any machine. Agents' host credentials may not.

// machineFacts are the Machine status fields a host may write.
var machineFacts = map[string]bool{
	"vendorClass": true, "uuid": true, "firmware": true, "addresses": true, "sshHostKeys": true,
	"installedAt": true, "lastBoot": true, "lastSeen": true, "powerState": true,
}

func authorizeDiscovery(p *Principal, r Request) error {
	m, ok := r.New.(*api.Machine)
	if !ok {
		return forbid(p, r, "boot services may only create discovered machines")
	}
	var set []string
	md, spec := m.Metadata, m.Spec
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"metadata.labels", len(md.Labels) > 0},
		{"metadata.annotations", len(md.Annotations) > 0},
		{"metadata.finalizers", len(md.Finalizers) > 0},
		{"metadata.ownerReferences", len(md.OwnerReferences) > 0},
		{"spec.approved", spec.Approved},
		{"spec.profile", spec.Profile != ""},
		{"spec.reinstallRequested", spec.ReinstallRequested != nil},
		{"spec.power", !reflect.DeepEqual(spec.Power, api.MachinePower{}) && !reflect.DeepEqual(spec.Power, api.MachinePower{Driver: api.PowerDriverNone})},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	if len(set) > 0 {
		return forbid(p, r, "a discovered machine is created without "+strings.Join(set, ", ")+": those are a person's to set")
	}
	return nil
}

func authorizeMachineFacts(p *Principal, r Request) error {
	if r.Stored == nil || r.New == nil {
		return forbid(p, r, "boot services may only write the observed facts of a Machine's status")
	}
	before, err1 := statusFields(r.Stored)
	after, err2 := statusFields(r.New)
	if err1 != nil || err2 != nil {
		return forbid(p, r, "its status cannot be compared")
	}
	var changed []string
	for k := range before {
		if _, ok := after[k]; !ok && !machineFacts[k] {
			changed = append(changed, k)
		}
	}
	for k, v := range after {
		if !machineFacts[k] && !reflect.DeepEqual(before[k], v) {
			changed = append(changed, k)
		}
	}
	if len(changed) > 0 {
		sort.Strings(changed)
		facts := make([]string, 0, len(machineFacts))
		for k := range machineFacts {
			facts = append(facts, k)
		}
		sort.Strings(facts)
		return forbid(p, r, "boot services may write only the facts they observe ("+strings.Join(facts, ", ")+"), not status."+strings.Join(changed, ", status."))
	}
	return nil
}

// statusFields is an object's status as JSON fields, which compares
// times and empty lists the way the API stores them.
func statusFields(obj api.Object) (map[string]any, error) {
	data, err := json.Marshal(obj.StatusAny())
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(data, &out)
}

func forbid(p *Principal, r Request, why string) error {
	target := r.Kind.Plural
	if r.Name != "" {
		target = r.Kind.Kind + " " + r.Name
	}
	where := ""
	switch {
	case r.AllTenants:
		where = " in all tenants"
	case r.Tenant != "":
		where = " in tenant " + r.Tenant
	}
	return api.NewForbidden("%s may not %s %s%s: %s", p.Name, r.Verb, target, where, why)
}
