package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/reconcile"
)

// Live migration. A VM's spec.host changed (admission checked it can
// move: shared volumes only) while it runs on its old host:
//
//  1. The destination's agent, to which the VM now belongs, sees a VM
//     whose status.host is another host and that runs there. It prepares
//     the VM as for a start, starts QEMU with the same devices, paused
//     and listening on its underlay address (Spec.Incoming), and writes
//     status.migration {from, incoming} with phase Migrating. status.host
//     stays the source's: the VM runs there until the move is done.
//  2. The source's agent no longer has the VM in its cache (its
//     spec.host is not this host), and before tearing it down asks the
//     API where it went. A VM that exists, whose migration names this
//     host as From and says where the destination listens, is sent there
//     (QMP migrate). Without that, the source waits (the destination is
//     getting ready).
//  3. The destination's QEMU has the whole state once its run state
//     leaves "inmigrate"; the agent reports the VM as usual, Running on
//     the new host with no migration, and then resumes it.
//  4. The source keeps its QEMU paused (QMP says "postmigrate") until
//     the VM's status.host names the destination, and only then kills
//     it. If the destination gave up on the migration the source sent
//     to (status.migration is gone or is another one: its QEMU died
//     before it took the VM), or the destination has not taken the VM
//     by the time it would have given up on its own, the source resumes
//     its copy (QMP cont): the VM never stopped being the source's.
//
// A move that fails is said once and not tried again (moveFailed on the
// destination, sendFailed on the source, which cancels a send that
// overruns Config.MigrationTimeout): the VM's Migrated condition says
// why, and the server's migration-rollback controller puts spec.host
// back where the VM runs. An agent restarted in the middle of a move
// from its host takes the VM back from what runs here (migrateadopt.go).
//
// Two copies must never run, so each side resumes only when it owns the
// VM, and status.host says who does. The destination writes status.host
// before it resumes, only until its deadline (the migration's StartedAt
// plus migrateTimeout, on its clock) and never after: past it, it kills
// its QEMU. The source resumes only while status.host still names it,
// and, unless the destination said it gave up, only after that deadline
// plus keepGrace (on the source's clock, counted from "completed", which
// comes after StartedAt): by then a destination's write of status.host
// has either landed, and the source kills its copy, or never will.
//
// The migration stream goes between the hosts' underlay addresses, never
// a tenant network, over TLS with both hosts' certificates from the
// cluster's migration CA (migratetls.go). Only the agent the VM belongs to writes its status,
// at every step.

// migrateTimeout bounds a migration: a destination still waiting after it
// gives up (kills its QEMU), and the VM starts over from step 1.
const migrateTimeout = 5 * time.Minute

// DefaultMigrationTimeout is how long a source sends one VM before it
// cancels the move (Config.MigrationTimeout): under the destination's own
// migrateTimeout, so the source gives up first, and long enough for
// several GiB of guest RAM over a busy gigabit link.
const DefaultMigrationTimeout = 4 * time.Minute

// keepGrace is how long after the destination's own deadline the source
// still keeps its paused copy: more than a status write in flight takes,
// and more than the hosts' clocks differ.
const keepGrace = time.Minute

// keepPoll is how often the source, its copy paused, asks whether the
// destination runs the VM.
const keepPoll = 250 * time.Millisecond

// retryAfterFailedMove is how long the source, running a VM again after
// the destination failed to take it, waits before it looks at it again
// (by then spec.host is back here, or someone asked for a new move).
const retryAfterFailedMove = 15 * time.Second

// testHookMigratedIn, if set (by tests), is called on the destination
// once its QEMU has the whole state, before it takes the VM; it returns
// true to have the destination look again instead (a test that kills
// the QEMU there, say).
var testHookMigratedIn func(uid, dir string) bool

// testHookIncomingStarted, if set (by tests), is called on the
// destination once its QEMU was started to receive a VM (a test that
// stops that QEMU, say).
var testHookIncomingStarted func(uid, dir string)

// incomingPoll is how often the destination asks its QEMU whether the
// whole state has arrived. Each look is a QMP query; the time between the
// last page arriving and the next look is downtime the guest's peers see
// (QEMU's own figure does not count it).
const incomingPoll = 50 * time.Millisecond

// incoming reports whether vm is on its way here from another host that
// still runs it.
func (v *vmController) incoming(vm *api.VirtualMachine) bool {
	st := vm.Status
	if _, ok := v.a.cfg.Driver.(compute.Migrator); !ok || st.Host == "" || st.Host == v.a.cfg.Name {
		return false
	}
	if vm.Spec.PowerState != "" && vm.Spec.PowerState != api.PowerRunning {
		return false
	}
	return st.Phase == api.VMRunning || st.Phase == api.VMMigrating
}

// incomingOverdue is whether a move to this host began longer than
// migrateTimeout ago (by the migration's own start): the source has
// given up on it by then (its --migration-timeout is at most that).
func incomingOverdue(m *api.VMMigration, now time.Time) bool {
	return m != nil && m.StartedAt != nil && now.Sub(*m.StartedAt) > migrateTimeout
}

// giveUpUnreadable ends a move to this host whose QEMU cannot even be
// looked at (its QMP silent) past migrateTimeout. A QEMU 7.2 waiting
// for a source that connected and then vanished (a crash or partition
// in the TLS handshake) reads the handshake on its main loop and
// answers nothing, and no source is left to record the failure: without
// this the VM's reconcile would fail at every look, for ever. Kill goes
// by the process, not QMP.
func (v *vmController) giveUpUnreadable(ctx context.Context, vm *api.VirtualMachine, dir string, lookErr error) (reconcile.Result, error) {
	m := vm.Status.Migration
	slog.Warn("giving up a live migration whose incoming QEMU does not answer", "vm", client.Key(vm), "from", m.From, "err", lookErr)
	if err := v.a.cfg.Driver.Kill(ctx, vm.Metadata.UID, dir); err != nil {
		return reconcile.Result{}, err
	}
	return v.moveFailed(ctx, vm, "%s could not read the state of its QEMU waiting for the VM from %s (%v) %s after the move began, and gave up",
		v.a.cfg.Name, m.From, lookErr, migrateTimeout)
}

// migrateIn is the destination's part (steps 1 and 3).
func (v *vmController) migrateIn(ctx context.Context, vm *api.VirtualMachine, dir string, f vmFacts) (reconcile.Result, error) {
	uid, drv := vm.Metadata.UID, v.a.cfg.Driver
	m := vm.Status.Migration
	if !f.Running && m != nil && m.From == vm.Status.Host && m.Incoming != "" {
		// This host started a QEMU to receive the VM and it is gone
		// before it had the whole state: the source cancelled (it timed
		// out, or failed to send), or the stream broke, or the process
		// died. The source still runs the VM.
		return v.moveFailed(ctx, vm, "the QEMU on %s waiting for the VM's state from %s exited before it had all of it (the source cancelled or failed to send it; see the events from %s)",
			v.a.cfg.Name, m.From, m.From)
	}
	if f.Running {
		if f.Info.Status == "inmigrate" {
			if m != nil && m.StartedAt != nil && time.Since(*m.StartedAt) > migrateTimeout {
				slog.Warn("giving up waiting for a live migration", "vm", client.Key(vm), "from", m.From)
				if err := drv.Kill(ctx, uid, dir); err != nil {
					return reconcile.Result{}, err
				}
				return v.moveFailed(ctx, vm, "%s waited %s for the VM's state from %s and gave up", v.a.cfg.Name, migrateTimeout, m.From)
			}
			// Look often: from the moment the state is all here until
			// this host resumes it, the guest runs nowhere.
			return reconcile.Result{RequeueAfter: incomingPoll}, nil
		}
		if h := testHookMigratedIn; h != nil && h(uid, dir) {
			return reconcile.Result{RequeueAfter: incomingPoll}, nil
		}
		// The state is all here: take the VM (status.host), then run
		// the guest; both only before the deadline after which the
		// source may resume its paused copy (step 4).
		if m == nil || m.StartedAt == nil {
			// This host's cache does not show the migration yet: wait
			// for it, but never past the deadline the source may have
			// counted from (it began after this QEMU did).
			if time.Since(f.Info.StartedAt) > migrateTimeout {
				slog.Warn("an incoming VM's migration is not recorded; not resuming it", "vm", client.Key(vm))
				if err := drv.Kill(ctx, uid, dir); err != nil {
					return reconcile.Result{}, err
				}
				return v.moveFailed(ctx, vm, "%s had the VM's state but its migration was never recorded in the VM's status", v.a.cfg.Name)
			}
			return reconcile.Result{RequeueAfter: incomingPoll}, nil
		}
		deadline := m.StartedAt.Add(migrateTimeout)
		if time.Now().After(deadline) {
			slog.Warn("a live migration finished too late; not resuming it", "vm", client.Key(vm), "from", m.From)
			if err := drv.Kill(ctx, uid, dir); err != nil {
				return reconcile.Result{}, err
			}
			return v.moveFailed(ctx, vm, "the VM's state reached %s after %s, too late to take it over from %s", v.a.cfg.Name, migrateTimeout, m.From)
		}
		from := vm.Status.Host
		info, _, err := drv.Lookup(ctx, uid, dir)
		if err != nil {
			return reconcile.Result{}, err
		}
		info.State, info.Status = compute.Running, "" // as it will be, once this host owns it
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err = v.report(wctx, vm, dir, vmState{Running: true, Info: info, StartedAt: vm.Status.StartedAt,
			FirstOutputAt: vm.Status.FirstOutputAt, RestartCount: vm.Status.RestartCount, MigratedFrom: from})
		cancel()
		if err != nil {
			// Not ours: leave the QEMU paused; the next pass resumes
			// it, or kills it past the deadline.
			return reconcile.Result{}, err
		}
		// The VM is this host's now (a failing resume is retried by the
		// usual controller: a paused process the spec wants running).
		if err := drv.Resume(ctx, uid, dir); err != nil {
			return reconcile.Result{}, err
		}
		if len(vm.Spec.NICs) > 0 {
			// Reported: the server moves its ports here (netmigrate.go).
			// Let the network know at once, too. Not fatal: the guest
			// answers ARP anyway.
			if err := drv.(compute.Migrator).Announce(ctx, uid, dir); err != nil {
				slog.Warn("announcing a migrated VM's NICs", "vm", client.Key(vm), "err", err)
			}
		}
		v.a.rec.Eventf(ctx, vm, api.EventNormal, "Migrated", "moved live from %s", from)
		return reconcile.Result{}, nil
	}

	spec, err := v.a.prepare(ctx, vm, dir)
	if errors.Is(err, errWaiting) {
		return reconcile.Result{}, fmt.Errorf("preparing to receive VM %s from %s: %w", client.Key(vm), vm.Status.Host, err)
	}
	if err != nil {
		return v.moveFailed(ctx, vm, "%s could not prepare to receive it: %v", v.a.cfg.Name, err)
	}
	port, err := freePort(v.a.cfg.Address)
	if err != nil {
		return reconcile.Result{}, err
	}
	tlsDir, err := v.a.migrationTLS(ctx)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("receiving VM %s: %w", client.Key(vm), err)
	}
	spec.Incoming = "tcp:" + net.JoinHostPort(v.a.cfg.Address, strconv.Itoa(port))
	// Only the host the VM moves from may send it (migratetls.go).
	spec.IncomingTLS = &compute.MigrationTLS{Dir: tlsDir, Peer: vm.Status.Host}
	if _, err := drv.Start(ctx, spec); err != nil {
		return v.moveFailed(ctx, vm, "%s could not start QEMU to receive it: %v", v.a.cfg.Name, err)
	}
	if h := testHookIncomingStarted; h != nil {
		h(uid, dir)
	}
	spec.Incoming, spec.IncomingTLS = "", nil
	if err := writeJSONFile(filepath.Join(dir, specFile), startedSpec{Spec: spec, VMDisks: vm.Spec.Disks, RestartRequested: vm.Spec.RestartRequested}); err != nil {
		return reconcile.Result{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, startedMarker), nil, 0o600); err != nil {
		return reconcile.Result{}, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	incoming := "tcp:" + net.JoinHostPort(v.a.cfg.Address, strconv.Itoa(port))
	_, _, err = client.WriteStatus(ctx, v.a.c, v.a.cache.vms, vm, func(cur *api.VirtualMachine) {
		cur.Status.Phase = api.VMMigrating
		cur.Status.Migration = &api.VMMigration{From: cur.Status.Host, Incoming: incoming, StartedAt: &now}
	})
	if err != nil {
		return reconcile.Result{}, err
	}
	v.a.rec.Eventf(ctx, vm, api.EventNormal, "Migrating", "waiting for the VM from %s on %s", vm.Status.Host, incoming)
	return reconcile.Result{RequeueAfter: 250 * time.Millisecond}, nil
}

// moveFailed records that vm did not move here: it still runs on
// status.host, no migration is under way (the source, waiting paused
// or not, sees that and runs it on), and its Migrated condition says why
// for this generation, with one Warning event. It is not tried again
// (api.MigrationFailed): the migration controller puts
// spec.host back to status.host.
func (v *vmController) moveFailed(ctx context.Context, vm *api.VirtualMachine, format string, args ...any) (reconcile.Result, error) {
	msg := fmt.Sprintf("not moved from %s to %s: ", vm.Status.Host, v.a.cfg.Name) + fmt.Sprintf(format, args...)
	_, _, err := client.WriteStatus(ctx, v.a.c, v.a.cache.vms, vm, func(cur *api.VirtualMachine) {
		if api.MigrationFailed(cur) {
			return // the source said it first
		}
		if cur.Status.Phase == api.VMMigrating {
			cur.Status.Phase = api.VMRunning // on the source, as before the move
		}
		cur.Status.Migration = nil
		cur.Status.SetCondition(api.Condition{Type: api.ConditionMigrated, Status: api.ConditionFalse, Reason: api.ReasonMigrationFailed,
			Message: msg, ObservedGeneration: cur.Metadata.Generation}, time.Now())
	})
	if err != nil {
		return reconcile.Result{}, err
	}
	slog.Warn("live migration failed", "vm", client.Key(vm), "why", msg)
	v.a.rec.Eventf(ctx, vm, api.EventWarning, api.ReasonMigrationFailed, "%s", msg)
	return reconcile.Result{}, nil
}

// migrateOut is the source's part (step 2), for a VM that left this
// host's cache while its process runs here. handled is false when the VM
// is not moving (it was deleted, or stopped): the caller tears it down.
func (v *vmController) migrateOut(ctx context.Context, key, uid string) (res reconcile.Result, handled bool, err error) {
	mig, ok := v.a.cfg.Driver.(compute.Migrator)
	if !ok {
		return res, false, nil
	}
	dir := v.dir(uid)
	info, running, lookupErr := v.a.cfg.Driver.Lookup(ctx, uid, dir)
	if !running {
		return res, false, nil
	}
	tenant, name := client.SplitKey(key)
	o, err := v.a.c.Get(ctx, "VirtualMachine", tenant, name)
	if err != nil {
		if api.IsNotFound(err) {
			return res, false, nil
		}
		return res, true, err
	}
	vm := o.(*api.VirtualMachine)
	if vm.Metadata.UID != uid || vm.Metadata.DeletionTimestamp != nil || vm.Spec.Host == v.a.cfg.Name || vm.Spec.Host == "" ||
		vm.Status.Host != v.a.cfg.Name || (vm.Spec.PowerState != "" && vm.Spec.PowerState != api.PowerRunning) {
		// Not a VM that runs here moving away (a QEMU that never got
		// a VM moving here, one that does not answer among them).
		slog.Info("VM left this host without moving live", "vm", key, "host", vm.Spec.Host, "statusHost", vm.Status.Host, "powerState", vm.Spec.PowerState)
		return res, false, nil
	}
	if lookupErr != nil {
		// It runs here, but does not answer (a busy host): look again
		// soon, not after an error's growing backoff, as the
		// destination waits.
		slog.Warn("VM left this host; its QEMU does not answer yet", "vm", key, "err", lookupErr)
		return reconcile.Result{RequeueAfter: time.Second}, true, nil
	}
	m := vm.Status.Migration
	if api.MigrationFailed(vm) {
		// The destination gave up (moveFailed); the migration
		// controller puts spec.host back here, and the VM is this
		// host's again as before.
		return reconcile.Result{RequeueAfter: 2 * time.Second}, true, nil
	}
	if m == nil || m.From != v.a.cfg.Name || m.Incoming == "" {
		// The destination is getting ready.
		return reconcile.Result{RequeueAfter: 250 * time.Millisecond}, true, nil
	}
	tlsDir, err := v.a.migrationTLS(ctx)
	if err != nil {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, true, err
	}
	// The destination's certificate must be for the address it listens
	// on (compute.Migrate checks the URI's form), which must be the
	// address of the host the VM moves to: only that host can have a
	// certificate for it.
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(m.Incoming, "tcp:"))
	ho, err := v.a.c.Get(ctx, "Host", "", vm.Spec.Host)
	if err != nil {
		return res, true, err
	}
	if a := ho.(*api.Host).Spec.Address; a == "" || a != host {
		return res, true, fmt.Errorf("VM %s: status.migration.incoming %q is not on host %s's address %q: not sending it there", key, m.Incoming, vm.Spec.Host, a)
	}
	if info.Status != "postmigrate" {
		attempt := uid + " " + m.Incoming
		if m.StartedAt != nil {
			attempt += " " + m.StartedAt.String()
		}
		v.mu.Lock()
		why, failed := v.failedSends[attempt]
		v.mu.Unlock()
		if failed {
			// Sending to this destination failed, and was said: it is
			// not tried again, but the status that says so is written
			// until it is.
			return reconcile.Result{RequeueAfter: 2 * time.Second}, true, v.sendFailed(ctx, vm, *m, why)
		}
		mctx, cancel := context.WithTimeout(ctx, v.a.cfg.MigrationTimeout)
		defer cancel()
		stats, err := mig.Migrate(mctx, uid, dir, m.Incoming, &compute.MigrationTLS{Dir: tlsDir, Hostname: host})
		if err != nil {
			if ctx.Err() != nil {
				return reconcile.Result{}, true, ctx.Err() // the agent stops; QEMU cancelled the migration
			}
			why := err.Error()
			if mctx.Err() != nil {
				why = fmt.Sprintf("sending it took longer than %s (the migration timeout), so it was cancelled", v.a.cfg.MigrationTimeout)
			}
			why = fmt.Sprintf("not moved from %s to %s: %s; it runs on %s", v.a.cfg.Name, vm.Spec.Host, why, v.a.cfg.Name)
			v.mu.Lock()
			v.failedSends[attempt] = why
			v.mu.Unlock()
			// The source still runs the VM (QEMU resumes a guest whose
			// migration failed or was cancelled).
			slog.Warn("migrating VM failed; it runs on here", "vm", key, "to", vm.Spec.Host, "err", err)
			v.a.rec.Eventf(ctx, vm, api.EventWarning, api.ReasonMigrationFailed, "%s", why)
			return reconcile.Result{RequeueAfter: 2 * time.Second}, true, v.sendFailed(ctx, vm, *m, why)
		}
		slog.Info("migrated VM", "vm", key, "to", vm.Spec.Host, "downtime", stats.Downtime, "total", stats.Total, "transferred", stats.Transferred)
	}
	// Sent, or sent before this agent restarted (QEMU says
	// "postmigrate"): step 4.
	return v.keepUntilTaken(ctx, key, uid, dir, *m)
}

// forgetFailedSends drops what failedSends holds of the VM with uid,
// once it is not moving away from here (it is placed here again, or gone
// from here): each attempt names its migration, which is over. Call it
// with v.mu held.
func (v *vmController) forgetFailedSends(uid string) {
	for attempt := range v.failedSends {
		if strings.HasPrefix(attempt, uid+" ") {
			delete(v.failedSends, attempt)
		}
	}
}

// sendFailed records, as the source of the migration m of vm, that it
// gave the move up (the one status write a source may make of a VM not
// placed on it: server/auth's migrationGivenUp): no migration, the VM
// Running here as before, and the Migrated condition saying why. The
// destination then kills the QEMU it started to receive the VM, and the
// migration controller puts spec.host back here. A migration that is
// not m any more (the destination gave up first) is left as it is.
func (v *vmController) sendFailed(ctx context.Context, vm *api.VirtualMachine, m api.VMMigration, why string) error {
	_, _, err := client.WriteStatus(ctx, v.a.c, nil, vm, func(cur *api.VirtualMachine) {
		if c := cur.Status.Migration; c == nil || c.From != m.From || c.Incoming != m.Incoming || !sameTime(c.StartedAt, m.StartedAt) {
			return
		}
		cur.Status.Migration = nil
		if cur.Status.Phase == api.VMMigrating {
			cur.Status.Phase = api.VMRunning
		}
		cur.Status.SetCondition(api.Condition{Type: api.ConditionMigrated, Status: api.ConditionFalse, Reason: api.ReasonMigrationFailed,
			Message: why, ObservedGeneration: cur.Metadata.Generation}, time.Now())
	})
	if err != nil {
		return fmt.Errorf("saying the move of VM %s failed: %w", client.Key(vm), err)
	}
	return nil
}

// keepUntilTaken is step 4: the source's QEMU, paused with the whole
// state sent as m says, is killed once the destination owns the VM, or
// resumed if it will not (see the comment at the top of this file for
// why two copies never run).
func (v *vmController) keepUntilTaken(ctx context.Context, key, uid, dir string, m api.VMMigration) (reconcile.Result, bool, error) {
	tenant, name := client.SplitKey(key)
	giveUp := time.Now().Add(migrateTimeout + keepGrace)
	if m.StartedAt != nil && m.StartedAt.Add(migrateTimeout+keepGrace).After(giveUp) {
		giveUp = m.StartedAt.Add(migrateTimeout + keepGrace)
	}
	why := "the destination did not take it in time"
	for time.Now().Before(giveUp) {
		o, err := v.a.c.Get(ctx, "VirtualMachine", tenant, name)
		// A host may read a VM while status.host (or the migration's
		// from) names it: one it may not read any more is not its own.
		gone := api.IsNotFound(err) || api.IsForbidden(err)
		if err != nil && !gone {
			if ctx.Err() != nil {
				return reconcile.Result{}, true, ctx.Err() // paused still; the next pass waits on
			}
			slog.Warn("asking whether a migrated VM runs on its destination", "vm", key, "err", err)
		} else {
			if gone || o.(*api.VirtualMachine).Metadata.DeletionTimestamp != nil || o.(*api.VirtualMachine).Status.Host != v.a.cfg.Name {
				// The destination owns it (or it was deleted): this copy
				// must never run again.
				if err := v.a.cfg.Driver.Kill(ctx, uid, dir); err != nil {
					return reconcile.Result{}, true, err
				}
				return reconcile.Result{}, false, nil // and the caller tears down what is left
			}
			if cur := o.(*api.VirtualMachine).Status.Migration; cur == nil || cur.Incoming != m.Incoming || !sameTime(cur.StartedAt, m.StartedAt) {
				why = "the destination gave up on it"
				break
			}
		}
		select {
		case <-ctx.Done():
			return reconcile.Result{}, true, ctx.Err()
		case <-time.After(keepPoll):
		}
	}
	// status.host still names this host, and the destination can no
	// longer take the VM: run it here again.
	slog.Warn("a migrated VM did not start on its destination; resuming it here", "vm", key, "why", why)
	if err := v.a.cfg.Driver.Resume(ctx, uid, dir); err != nil {
		return reconcile.Result{}, true, fmt.Errorf("resuming VM %s after %s: %w", key, why, err)
	}
	if o, err := v.a.c.Get(ctx, "VirtualMachine", tenant, name); err == nil {
		vm := o.(*api.VirtualMachine)
		v.a.rec.Eventf(ctx, vm, api.EventWarning, api.ReasonMigrationFailed, "not moved from %s to %s: %s; it runs on %s again", v.a.cfg.Name, vm.Spec.Host, why, v.a.cfg.Name)
	}
	return reconcile.Result{RequeueAfter: retryAfterFailedMove}, true, nil
}

// sameTime reports whether a and b are both nil or the same time.
func sameTime(a, b *time.Time) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Equal(*b)
}

// freePort returns a TCP port free on addr now.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a port for an incoming migration on %s: %w", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
