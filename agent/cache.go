package agent

import (
	"context"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// cache is the agent's one copy of the API objects it works from, shared
// by its controllers: one informer per kind, so a kind is listed and
// watched once however many controllers read it. The controllers read it
// and own nothing in it; each owns only its own state (its queue, what it
// remembers of its objects). What one kind's change means for another
// controller's keys is said in one place, wire, so every cross-enqueue is
// explicit there.
type cache struct {
	// vms, volumes and snapshots are those placed on this host
	// (spec.host); images are every Image the host can read: shared ones
	// and those of the tenants it holds something of, since a VM or
	// volume here may name any. pools are every StoragePool.
	//
	// A host's credential reads only what it needs (server/auth's
	// hostscope.go): the informers below hold what the server lets it
	// read, which follows what is placed here (the server ends their
	// watches when that changes, and they list again).
	vms, volumes, snapshots, images, pools *client.Informer
	// With tenant networking on (netController): the Networks, Subnets
	// and FloatingIPs of the tenants with a VM here, every
	// ExternalNetwork, and the Hosts (their underlay addresses). Nil
	// when it is off.
	networks, subnets, floatingIPs, externalNetworks, hosts *client.Informer
	// securityGroups the NICs of the VMs here name (netsecgroups.go);
	// nil when networking is off.
	securityGroups *client.Informer
	// sshKeys are the SSHKeys of the VMs here, which the metadata
	// service hands them; nil with tenant networking off.
	sshKeys *client.Informer
}

func newCache(c *client.Client, host string, networking bool) *cache {
	here := client.ListOptions{AllTenants: true, FieldSelector: "spec.host=" + host}
	all := client.ListOptions{AllTenants: true}
	ca := &cache{
		vms:       client.NewInformer(c, "VirtualMachine", "", here),
		volumes:   client.NewInformer(c, "Volume", "", here),
		snapshots: client.NewInformer(c, "Snapshot", "", here),
		images:    client.NewInformer(c, "Image", "", all),
		pools:     client.NewInformer(c, "StoragePool", "", client.ListOptions{}),
	}
	if networking {
		ca.networks = client.NewInformer(c, "Network", "", all)
		ca.subnets = client.NewInformer(c, "Subnet", "", all)
		ca.floatingIPs = client.NewInformer(c, "FloatingIP", "", all)
		ca.externalNetworks = client.NewInformer(c, "ExternalNetwork", "", all)
		ca.hosts = client.NewInformer(c, "Host", "", all)
		ca.securityGroups = client.NewInformer(c, "SecurityGroup", "", all)
		ca.sshKeys = client.NewInformer(c, "SSHKey", "", all)
	}
	return ca
}

func (c *cache) informers() []*client.Informer {
	infs := []*client.Informer{c.vms, c.volumes, c.snapshots, c.images, c.pools}
	if c.networks != nil {
		infs = append(infs, c.networks, c.subnets, c.floatingIPs, c.externalNetworks, c.hosts, c.securityGroups, c.sshKeys)
	}
	return infs
}

// run keeps every informer current until ctx ends.
func (c *cache) run(ctx context.Context) {
	for _, inf := range c.informers() {
		go inf.Run(ctx)
	}
}

// waitSynced waits until every informer has its first list.
func (c *cache) waitSynced(ctx context.Context) error {
	for _, inf := range c.informers() {
		if err := inf.WaitSynced(ctx); err != nil {
			return err
		}
	}
	return nil
}

// wire registers who hears of what: each controller's own kind, and the
// changes of other kinds that concern its keys. Call it before run.
func (a *Agent) wire() {
	a.cache.vms.OnUpdate(func(ch client.Change) {
		a.vms.vmChanged(ch)
		a.volumes.vmChanged(ch)
	})
	a.cache.volumes.OnUpdate(func(ch client.Change) {
		a.volumes.volumeChanged(ch)
		a.vms.volumeChanged(ch)
	})
	a.cache.snapshots.OnUpdate(a.volumes.snapshotChanged)
	a.cache.pools.OnUpdate(a.volumes.poolChanged)
	if a.net != nil {
		a.wireNetwork()
	}
	a.cache.images.OnUpdate(func(ch client.Change) {
		a.vms.imageChanged(ch)
		a.volumes.imageChanged(ch)
	})
}

// ownChange is how a controller hears of a change to one of its own
// objects: a change of spec or metadata (or the object coming or going)
// is reconciled at once, even while the key backs off after a failure; a
// change of status alone (the echo of the controller's own write, or
// another writer's condition) is not reconciled at all: the controller
// owns what it reports, and the resync repairs the rare overwrite.
func ownChange(ch client.Change, enqueueNow func(string)) {
	if !ch.StatusOnly() {
		enqueueNow(ch.Key)
	}
}

// imageOffers says whether an Image's change can change what a VM or
// volume gets from it: it came or went, its spec changed, or its
// checksum became known (an upload arrived). Download progress, which
// hosts write every second, does not.
func imageOffers(ch client.Change) bool {
	if !ch.StatusOnly() {
		return true
	}
	a, b := ch.Old.(*api.Image), ch.New.(*api.Image)
	return a.Status.Checksum != b.Status.Checksum || a.Status.Phase != b.Status.Phase
}

// imageNamedBy reports whether an object of tenant naming image name
// means the Image at key: its tenant's own, or a shared one.
func imageNamedBy(key, tenant, name string) bool {
	t, n := client.SplitKey(key)
	return n == name && (t == "" || t == tenant)
}
