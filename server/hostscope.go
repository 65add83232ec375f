package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// The host scope: what each host's agent needs of the objects whose
// visibility to a host depends on others (auth.HostScope, which says
// what a host reads). It is kept from one watch of the VMs and one of
// the Volumes, each change applied as a difference of what the object
// asked of which hosts before and after, so a change costs the hosts it
// touches and a decision a map lookup: no request walks every VM, which
// matters with a thousand hosts.
//
// A host's lists and watches of these kinds are filtered by the scope.
// An object can enter or leave what a host reads without changing
// itself (a VM placed on the host names an SSHKey), which no watch of
// that object would tell. So a change of a host's scope ends the host's
// watches of the kinds it changes with 410 Gone, and the agent's
// informer lists again (which reads only the tenants the host holds
// something of). That happens when a host takes its first VM of a
// tenant or a VM naming another key or group, not at every VM: the
// agent's watches of what is placed on it (spec.host=HOST) read every
// such object whatever the scope and are never ended. For a list and
// the watch that follows it to miss nothing, a list is filtered by the
// scope as it was at (or after) the list's revision (waitFor), and a
// watch from a revision before the scope last changed is Gone at once.

// hostScope implements auth.HostScope.
type hostScope struct {
	store           *store.Store
	etcd            *clientv3.Client
	vmKind, volKind *api.KindInfo

	mu sync.Mutex
	// rev: every change of VMs and Volumes up to rev is applied (0
	// before the first list). advanced is closed, and replaced, each
	// time rev moves.
	rev      int64
	revs     [2]int64 // of the VM watch and the Volume watch
	advanced chan struct{}
	vms      map[string]vmNeeds // by tenant/name
	volHost  map[string]string  // a Volume's spec.host, by tenant/name
	// volUsers counts the VMs that name each Volume (tenant/name).
	volUsers map[string]int
	hosts    map[string]*hostNeeds
}

// vmNeeds is what one VM asks of the hosts it involves.
type vmNeeds struct {
	tenant  string
	hosts   []string
	allKeys bool // it names no SSHKey, so it gets every key of its tenant
	keys    []string
	groups  []string
	volumes []string
}

// hostNeeds is one host's scope: reference counts by tenant/name (or
// tenant), and the watches that end when it changes.
type hostNeeds struct {
	tenants               map[string]int
	keys, groups, volumes map[string]int
	allKeys               map[string]int
	changedAt             map[string]int64 // by kind: the revision the kind's scope last changed at
	tenantsGen            uint64           // counts changes of the set of tenants
	watches               map[*scopeWatch]struct{}
	// Scratch of one apply: the kinds whose scope changed, and whether
	// the set of tenants did.
	changedKinds   map[string]bool
	tenantsChanged bool
}

// scopeWatch is one API watch of a host-scoped kind by a host.
type scopeWatch struct {
	kind string
	gone chan struct{}
}

// scopeStream is the gRPC metadata that gives the scope's etcd watches a
// stream of their own.
var scopeStream = []string{"hearth-watch-stream", "host-scope"}

// tenantKinds are the kinds a host reads whole for the tenants it holds
// something of.
var tenantKinds = []string{"Snapshot", "Network", "Subnet", "FloatingIP", "Image", "Volume"}

func newHostScope(st *store.Store, c *clientv3.Client) *hostScope {
	vk, _ := api.KindByName("VirtualMachine")
	lk, _ := api.KindByName("Volume")
	return &hostScope{store: st, etcd: c, vmKind: vk, volKind: lk, advanced: make(chan struct{}),
		vms: map[string]vmNeeds{}, volHost: map[string]string{}, volUsers: map[string]int{}, hosts: map[string]*hostNeeds{}}
}

func (hs *hostScope) host(name string) *hostNeeds {
	h := hs.hosts[name]
	if h == nil {
		h = &hostNeeds{tenants: map[string]int{}, keys: map[string]int{}, groups: map[string]int{}, volumes: map[string]int{},
			allKeys: map[string]int{}, changedAt: map[string]int64{}, watches: map[*scopeWatch]struct{}{}}
		hs.hosts[name] = h
	}
	return h
}

// Needs implements auth.HostScope.
func (hs *hostScope) Needs(host string, obj api.Object) bool {
	m := obj.GetMetadata()
	key := m.Tenant + "/" + m.Name
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if vm, ok := obj.(*api.VirtualMachine); ok {
		// A VM that uses a Volume placed on the host: its agent
		// manages the volume and must know when it is in use.
		for _, d := range vm.Spec.Disks {
			if d.Volume != "" && hs.volHost[m.Tenant+"/"+d.Volume] == host {
				return true
			}
		}
		return false
	}
	h := hs.hosts[host]
	if h == nil {
		return false
	}
	switch obj.GetTypeMeta().Kind {
	case "Volume":
		if h.volumes[key] > 0 {
			return true
		}
		// A volume cloned from a snapshot, wherever it is placed: the
		// host of the snapshot (its source volume's) deletes the
		// snapshot's data only once no volume of the tenant is cloned
		// from it, and a clone's file in an NFS pool reads its
		// snapshot's. Missing one would delete data a clone on
		// another host still reads.
		v, ok := obj.(*api.Volume)
		return ok && v.Spec.Source.Snapshot != "" && m.Tenant != "" && h.tenants[m.Tenant] > 0
	case "SSHKey":
		return h.keys[key] > 0 || h.allKeys[m.Tenant] > 0
	case "SecurityGroup":
		return h.groups[key] > 0
	case "Snapshot", "Network", "Subnet", "FloatingIP", "Image":
		return m.Tenant != "" && h.tenants[m.Tenant] > 0
	}
	return false
}

// tenants returns the tenants host holds something of, and the count of
// changes of that set.
func (hs *hostScope) tenants(host string) ([]string, uint64) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.hosts[host]
	if h == nil {
		return nil, 0
	}
	out := make([]string, 0, len(h.tenants))
	for t := range h.tenants {
		out = append(out, t)
	}
	return out, h.tenantsGen
}

// tenantsGen is the count of changes of host's set of tenants.
func (hs *hostScope) tenantsGen(host string) uint64 {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h := hs.hosts[host]; h != nil {
		return h.tenantsGen
	}
	return 0
}

// watch registers an API watch by host of kind from revision from. It is
// Gone at once when the host's scope of the kind changed after from: the
// list the watch continues was filtered by an older scope.
func (hs *hostScope) watch(host, kind string, from int64) (*scopeWatch, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h := hs.host(host)
	if from > 0 && h.changedAt[kind] > from {
		return nil, errScopeChanged(host, kind)
	}
	w := &scopeWatch{kind: kind, gone: make(chan struct{})}
	h.watches[w] = struct{}{}
	return w, nil
}

func (hs *hostScope) unwatch(host string, w *scopeWatch) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if h := hs.hosts[host]; h != nil {
		delete(h.watches, w)
	}
}

func errScopeChanged(host, kind string) error {
	return api.NewGone("what host %s reads of %s changed (an object was placed on it or left it): list again", host, kind)
}

// waitFor waits until every change up to rev is applied, asking etcd for
// a progress notice when the watches have nothing to say.
func (hs *hostScope) waitFor(ctx context.Context, rev int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		hs.mu.Lock()
		cur, ch := hs.rev, hs.advanced
		hs.mu.Unlock()
		if cur >= rev && cur > 0 {
			return nil
		}
		if cur > 0 {
			// The store's watches share one stream, keyed by the
			// require-leader metadata they are opened with.
			// The store's watches are opened with the require-leader
			// metadata, which, with scopeStream, names their stream.
			_ = hs.etcd.RequestProgress(clientv3.WithRequireLeader(metadata.AppendToOutgoingContext(ctx, scopeStream...)))
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return api.NewUnavailable("the server's index of what each host reads is behind revision %d: try again", rev)
		}
	}
}

// sync waits until every change up to now is applied.
func (hs *hostScope) sync(ctx context.Context) error {
	rev, err := hs.currentRev(ctx)
	if err != nil {
		return err
	}
	return hs.waitFor(ctx, rev)
}

// currentRev is etcd's revision now, read with a get of one key no
// object has (which costs etcd no walk of a prefix).
func (hs *hostScope) currentRev(ctx context.Context) (int64, error) {
	resp, err := hs.etcd.Get(ctx, store.Prefix+"host-scope-revision", clientv3.WithCountOnly())
	if err != nil {
		return 0, api.NewUnavailable("reading etcd's revision: %v", err)
	}
	return resp.Header.Revision, nil
}

// run keeps the scope current until ctx ends: a list of the VMs and
// Volumes, then their changes; a broken watch lists again.
func (hs *hostScope) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := hs.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		slog.Warn("host scope: watch of VMs and Volumes ended; listing again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (hs *hostScope) follow(ctx context.Context) error {
	// The scope's watches have an etcd watch stream of their own, so
	// that a progress request (waitFor) is not refused for another
	// watch of the server's that is not yet synced.
	ctx = metadata.AppendToOutgoingContext(ctx, scopeStream...)
	// Objects are read as stored and decoded leniently: the scope reads
	// a few fields, and an object a newer Hearth wrote (fields this
	// server does not know) must not stop it.
	vms, rev, err := hs.listRaw(ctx, hs.vmKind, 0)
	if err != nil {
		return err
	}
	// The Volumes at the VMs' revision: both watches go on from it.
	vols, _, err := hs.listRaw(ctx, hs.volKind, rev)
	if err != nil {
		return err
	}
	hs.reset(vms, vols, rev)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := store.WatchOptions{Raw: true, GoOn: true}
	vmEvents, err := hs.store.Watch(ctx, hs.vmKind, store.KindPrefix(hs.vmKind), rev, opts)
	if err != nil {
		return err
	}
	volEvents, err := hs.store.Watch(ctx, hs.volKind, store.KindPrefix(hs.volKind), rev, opts)
	if err != nil {
		return err
	}
	for {
		var ev store.Event
		var ok bool
		i, k := 0, hs.vmKind
		select {
		case ev, ok = <-vmEvents:
		case ev, ok = <-volEvents:
			i, k = 1, hs.volKind
		case <-ctx.Done():
			return ctx.Err()
		}
		switch {
		case !ok:
			return api.NewUnavailable("watch ended")
		case ev.Type == store.Error && ev.Key != "":
			// An object of another apiVersion: what it asks is
			// not known, so what it asked before stays.
			slog.Warn("host scope: cannot read an object; what it asks of hosts is left as it was", "key", ev.Key, "err", ev.Err)
			hs.apply(i, store.Event{Type: store.Bookmark, Rev: ev.Rev})
			continue
		case ev.Type == store.Error:
			return ev.Err
		case ev.Raw != nil:
			obj := k.New()
			if err := api.Unmarshal(ev.Raw, obj); err != nil {
				return err
			}
			ev.Object = obj
		}
		hs.apply(i, ev)
	}
}

// listRaw lists every object of kind k at revision rev (0: now), read
// as stored and decoded leniently, and the revision read at.
func (hs *hostScope) listRaw(ctx context.Context, k *api.KindInfo, rev int64) ([]api.Object, int64, error) {
	var out []api.Object
	rev, err := hs.store.ListRawPages(ctx, k, store.KindPrefix(k), nil, rev, func(_ int64, items [][]byte) error {
		for _, item := range items {
			obj := k.New()
			if err := api.Unmarshal(item, obj); err != nil {
				return fmt.Errorf("decoding a stored %s: %w", k.Kind, err)
			}
			out = append(out, obj)
		}
		return nil
	})
	return out, rev, err
}

// needsOf is what a VM asks of its hosts.
func needsOf(vm *api.VirtualMachine) vmNeeds {
	n := vmNeeds{tenant: vm.Metadata.Tenant, hosts: auth.VMHosts(vm)}
	if len(n.hosts) == 0 {
		return n
	}
	n.keys = vm.Spec.CloudInit.SSHKeys
	n.allKeys = len(n.keys) == 0
	for _, nic := range vm.Spec.NICs {
		n.groups = append(n.groups, nic.SecurityGroups...)
	}
	for _, d := range vm.Spec.Disks {
		if d.Volume != "" {
			n.volumes = append(n.volumes, d.Volume)
		}
	}
	return n
}

// reset replaces the whole scope with one computed from a list at rev;
// every host's watches end, as anything may have changed.
func (hs *hostScope) reset(vms, vols []api.Object, rev int64) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	old := hs.hosts
	hs.vms, hs.volHost, hs.volUsers, hs.hosts = map[string]vmNeeds{}, map[string]string{}, map[string]int{}, map[string]*hostNeeds{}
	for _, o := range vols {
		v := o.(*api.Volume)
		hs.setVolumeLocked(v.Metadata.Tenant+"/"+v.Metadata.Name, v.Spec.Host, rev)
	}
	for _, o := range vms {
		vm := o.(*api.VirtualMachine)
		hs.setVMLocked(vm.Metadata.Tenant+"/"+vm.Metadata.Name, needsOf(vm), rev)
	}
	for name, h := range old {
		n := hs.host(name)
		for w := range h.watches {
			close(w.gone)
		}
		n.tenantsGen = h.tenantsGen + 1
	}
	for _, h := range hs.hosts {
		for _, k := range append([]string{"VirtualMachine", "Volume", "SSHKey", "SecurityGroup"}, tenantKinds...) {
			h.changedAt[k] = rev
		}
	}
	hs.revs = [2]int64{}
	hs.advanceLocked(0, rev)
	hs.advanceLocked(1, rev)
}

// apply applies one change of the watch i (0 VMs, 1 Volumes).
func (hs *hostScope) apply(i int, ev store.Event) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if ev.Type != store.Bookmark && ev.Object != nil {
		m := ev.Object.GetMetadata()
		key := m.Tenant + "/" + m.Name
		switch o := ev.Object.(type) {
		case *api.VirtualMachine:
			n := vmNeeds{}
			if ev.Type != store.Deleted {
				n = needsOf(o)
			}
			hs.setVMLocked(key, n, ev.Rev)
		case *api.Volume:
			host := ""
			if ev.Type != store.Deleted {
				host = o.Spec.Host
			}
			hs.setVolumeLocked(key, host, ev.Rev)
		}
	}
	hs.advanceLocked(i, ev.Rev)
}

func (hs *hostScope) advanceLocked(i int, rev int64) {
	if rev <= hs.revs[i] {
		return
	}
	hs.revs[i] = rev
	if r := min(hs.revs[0], hs.revs[1]); r > hs.rev {
		hs.rev = r
		close(hs.advanced)
		hs.advanced = make(chan struct{})
	}
}

// count adds d to m[k], and reports whether k came (0 to 1) or went.
func count(m map[string]int, k string, d int) bool {
	m[k] += d
	switch m[k] {
	case 0:
		delete(m, k)
		return true
	case 1:
		return d > 0
	}
	return false
}

// setVMLocked replaces what the VM at key asks of its hosts with n.
func (hs *hostScope) setVMLocked(key string, n vmNeeds, rev int64) {
	old := hs.vms[key]
	if reflect.DeepEqual(old, n) || (len(old.hosts) == 0 && len(n.hosts) == 0) {
		return // a change of status, say: nothing it asks changed
	}
	if len(n.hosts) == 0 {
		delete(hs.vms, key)
	} else {
		hs.vms[key] = n
	}
	touched := map[*hostNeeds]bool{}
	add := func(v vmNeeds, d int) {
		for _, name := range v.hosts {
			h := hs.host(name)
			touched[h] = true
			if count(h.tenants, v.tenant, d) {
				h.tenantsChanged = true
			}
			if v.allKeys && count(h.allKeys, v.tenant, d) {
				h.mark("SSHKey")
			}
			for _, k := range v.keys {
				if count(h.keys, v.tenant+"/"+k, d) {
					h.mark("SSHKey")
				}
			}
			for _, g := range v.groups {
				if count(h.groups, v.tenant+"/"+g, d) {
					h.mark("SecurityGroup")
				}
			}
			for _, vol := range v.volumes {
				if count(h.volumes, v.tenant+"/"+vol, d) {
					h.mark("Volume")
				}
			}
		}
		for _, vol := range v.volumes {
			vk := v.tenant + "/" + vol
			if count(hs.volUsers, vk, d) {
				// VMs that use a volume are read by its host: the
				// first user came or the last went.
				if host := hs.volHost[vk]; host != "" {
					h := hs.host(host)
					touched[h] = true
					h.mark("VirtualMachine")
				}
			}
		}
	}
	add(old, -1)
	add(n, 1)
	for h := range touched {
		hs.settleLocked(h, rev)
	}
}

// setVolumeLocked records where the Volume at key is placed ("" gone).
func (hs *hostScope) setVolumeLocked(key, host string, rev int64) {
	old, had := hs.volHost[key]
	if had && old == host {
		return
	}
	tenant, _, _ := cut(key)
	touched := map[*hostNeeds]bool{}
	if had && old != "" {
		delete(hs.volHost, key)
		h := hs.host(old)
		touched[h] = true
		if count(h.tenants, tenant, -1) {
			h.tenantsChanged = true
		}
		if hs.volUsers[key] > 0 {
			h.mark("VirtualMachine")
		}
	}
	if host != "" {
		hs.volHost[key] = host
		h := hs.host(host)
		touched[h] = true
		if count(h.tenants, tenant, 1) {
			h.tenantsChanged = true
		}
		if hs.volUsers[key] > 0 {
			h.mark("VirtualMachine")
		}
	}
	for h := range touched {
		hs.settleLocked(h, rev)
	}
}

func cut(key string) (tenant, name string, ok bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", key, false
}

// mark records that the host's scope of kind changed in this apply.
func (h *hostNeeds) mark(kind string) {
	if h.changedKinds == nil {
		h.changedKinds = map[string]bool{}
	}
	h.changedKinds[kind] = true
}

// settleLocked ends the host's watches of every kind whose scope changed
// in this apply, and records the revision it changed at.
func (hs *hostScope) settleLocked(h *hostNeeds, rev int64) {
	if h.tenantsChanged {
		h.tenantsGen++
		for _, k := range tenantKinds {
			h.mark(k)
		}
		h.tenantsChanged = false
	}
	for k := range h.changedKinds {
		h.changedAt[k] = rev
		for w := range h.watches {
			if w.kind == k {
				close(w.gone)
				delete(h.watches, w)
			}
		}
	}
	h.changedKinds = nil
}

// sees is auth.VisibleTo, but for a host that the scope says does not
// need obj, asked again once the scope has every change up to now: an
// agent reads an object the moment it learns of a VM placed on it,
// perhaps before the scope has that VM.
func (s *Server) sees(ctx context.Context, p *auth.Principal, k *api.KindInfo, obj api.Object) bool {
	if auth.VisibleTo(p, obj) {
		return true
	}
	if !auth.HostScoped(p, k) || s.scope.sync(ctx) != nil {
		return false
	}
	return auth.VisibleTo(p, obj)
}

// hostList serves a host's list of a host-scoped kind: only the tenants
// the host holds something of are read (for the kinds whose objects it
// reads only there), and every object is filtered by the scope as it
// stands at the list's revision or later, so that a watch from the
// list's revision misses no change of the scope (see hostScope.watch).
func (s *Server) hostList(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target, f filter) error {
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		ps, gen := s.hostPrefixes(p, t)
		var items []api.Object
		var rev int64
		for i, prefix := range ps {
			// Every prefix at the first one's revision (Store.ListAt).
			objs, rv, err := s.store.ListAt(ctx, t.kind, prefix, f.labels, rev)
			if err != nil {
				return err
			}
			rev = rv
			if i == 0 {
				if err := s.scope.waitFor(ctx, rv); err != nil {
					return err
				}
			}
			for _, o := range objs {
				if auth.VisibleTo(p, o) && f.fields(shown(p, o)) {
					items = append(items, shown(p, o))
				}
			}
		}
		if rev == 0 {
			// Nothing was read: the list is as of now.
			var err error
			if rev, err = s.scope.currentRev(ctx); err != nil {
				return err
			}
			if err := s.scope.waitFor(ctx, rev); err != nil {
				return err
			}
		}
		if s.scope.tenantsGen(p.Host) != gen {
			// The host's tenants changed while it was read: read
			// them again, or a watch from rev would miss the new ones.
			if attempt < 3 {
				continue
			}
			return api.NewUnavailable("what host %s reads is changing: try again", p.Host)
		}
		if items == nil {
			items = []api.Object{}
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"apiVersion": api.APIVersion,
			"kind":       t.kind.Kind + "List",
			"metadata":   api.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)},
			"items":      items,
		})
		return nil
	}
}

// hostPrefixes are the prefixes a host's list reads, and the count of
// changes of its tenants they were chosen by. A list across tenants of
// a kind the host reads only in the tenants it holds something of reads
// just those tenants (and the shared Images).
func (s *Server) hostPrefixes(p *auth.Principal, t target) ([]string, uint64) {
	tenants, gen := s.scope.tenants(p.Host)
	ps := prefixes(p, t)
	if len(ps) != 1 || ps[0] != store.KindPrefix(t.kind) {
		return ps, gen
	}
	switch t.kind.Kind {
	case "Event", "User", "VirtualMachineSet":
		return ps, gen
	}
	slices.Sort(tenants)
	out := make([]string, 0, len(tenants)+1)
	if t.kind.Scope == api.TenantOptional {
		out = append(out, store.TenantPrefix(t.kind, ""))
	}
	for _, tn := range tenants {
		out = append(out, store.TenantPrefix(t.kind, tn))
	}
	return out, gen
}

// placedHere reports whether a host's watch selects only objects placed
// on it (spec.host=HOST, as the agent watches its VMs, Volumes and
// Snapshots): the host reads every one of those whatever the scope, so
// a change of the scope does not end the watch.
func placedHere(p *auth.Principal, k *api.KindInfo, f filter) bool {
	return k.PlacedOn != nil && strings.Join(f.index, ".") == "spec.host" && f.indexValue == p.Host
}
