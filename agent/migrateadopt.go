package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// An agent restarted in the middle of a live migration from this host
// (migrate.go) finds the leaving VM's QEMU still running, but knows
// nothing else of it: the VM left the cache (its spec.host names the
// destination), and what the running agent kept in memory (the VM
// controller's key → uid, the network controller's leavingTracker) is
// gone. Without it the VM would be collected as an orphan (its QEMU
// killed in mid-move) and its ports here removed while its guest still
// runs here. So, before either controller acts, adoptLeaving looks at
// the VM directories with a running QEMU that the cache does not have,
// asks the API which of them are VMs still running here (status.host)
// though placed elsewhere, and takes them back: the VM controller goes
// on with their move (migrateOut, which picks up from what QEMU says:
// still sending, or sent and paused), and the network controller keeps
// their ports until the destination has them (leavingTracker).

// adoptRetry is how long the agent waits between failed tries to ask
// the API about the VMs it finds running at its start.
const adoptRetry = 2 * time.Second

// testHookAdopted, if set (by tests), is called with the keys of the
// VMs adoptLeaving took back.
var testHookAdopted func(host string, keys []string)

// adoptLeaving runs once at the start, after the cache synced, and
// closes a.adopted when done (or when ctx ends).
func (v *vmController) adoptLeaving(ctx context.Context) {
	defer close(v.a.adopted)
	entries, err := os.ReadDir(filepath.Join(v.a.cfg.DataDir, "vms"))
	if err != nil {
		return
	}
	cached := map[string]bool{}
	for _, o := range v.a.cache.vms.List() {
		cached[o.GetMetadata().UID] = true
	}
	running := map[string]bool{}
	for _, e := range entries {
		if uid := e.Name(); e.IsDir() && !cached[uid] {
			if _, ok, _ := v.a.cfg.Driver.Lookup(ctx, uid, v.dir(uid)); ok {
				running[uid] = true
			}
		}
	}
	if len(running) == 0 {
		return
	}
	var list []api.Object
	for {
		list, _, err = v.a.c.List(ctx, "VirtualMachine", "", client.ListOptions{AllTenants: true, FieldSelector: "status.host=" + v.a.cfg.Name})
		if err == nil {
			break
		}
		slog.Warn("asking which VMs running here are moving away", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(adoptRetry):
		}
	}
	var keys []string
	for _, o := range list {
		vm := o.(*api.VirtualMachine)
		if !running[vm.Metadata.UID] || vm.Metadata.DeletionTimestamp != nil || vm.Spec.Host == v.a.cfg.Name || vm.Status.Host != v.a.cfg.Name {
			continue
		}
		key := client.Key(vm)
		v.mu.Lock()
		v.uids[key] = vm.Metadata.UID
		v.mu.Unlock()
		if v.a.net != nil {
			v.a.net.leaving.adopt(vm)
		}
		v.ctl.EnqueueNow(key)
		keys = append(keys, key)
		slog.Info("VM moving away still runs here; carrying on with its move", "vm", key, "to", vm.Spec.Host)
	}
	if h := testHookAdopted; h != nil {
		h(v.a.cfg.Name, keys)
	}
}

// adopt takes a VM leaving this host that the tracker did not see go
// (the agent restarted since): its ports stay until release.
func (l *leavingTracker) adopt(vm *api.VirtualMachine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leaving == nil {
		l.leaving = map[string]*api.VirtualMachine{}
	}
	l.leaving[vmKey(vm)] = vm
}
