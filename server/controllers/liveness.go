// Package controllers holds the control plane's controllers. Each is
// level-triggered: it reads what is through informers, compares it with
// what should be, and makes the smallest change through the API.
package controllers

import (
	"context"
	"fmt"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// HostLiveness marks a Host NotReady when its agent has renewed its lease
// neither through the API server's host lease (Leases: an etcd lease the
// agent renews with POST .../hosts/NAME/heartbeat, which writes nothing)
// nor by writing status.lastHeartbeat, within spec.leaseSeconds.
type HostLiveness struct {
	Client   *client.Client
	Recorder *client.Recorder
	Now      func() time.Time
	// Informers, when set, are shared with the term's other controllers.
	Informers *Informers
	// Leases are the hosts' leases; nil reads status.lastHeartbeat only.
	Leases HostLeases

	hosts *client.Informer
}

// HostLeases are the hosts' leases as the API server keeps them in etcd.
type HostLeases interface {
	// Alive reports whether the Host name with uid holds a lease.
	Alive(name, uid string) bool
	// OnChange calls fn with a host's name when its lease is granted or
	// runs out, until stop is called.
	OnChange(fn func(host string)) (stop func())
	// WaitSynced waits until the leases are known.
	WaitSynced(ctx context.Context) error
}

// Run runs the controller until ctx ends.
func (h *HostLiveness) Run(ctx context.Context) error {
	if h.Now == nil {
		h.Now = time.Now
	}
	h.hosts = h.Informers.informer(ctx, h.Client, "Host")
	ctl := &reconcile.Controller{Name: "host-liveness", Reconciler: h, Workers: 2, Resync: time.Minute, SpreadResync: true,
		List: func(context.Context) ([]string, error) { return h.hosts.Keys(), nil }}
	h.hosts.OnUpdateUntil(ctx, enqueueOwn(ctl, ""))
	if h.Leases != nil {
		stop := h.Leases.OnChange(ctl.Enqueue)
		defer stop()
		if err := h.Leases.WaitSynced(ctx); err != nil {
			return nil
		}
	}
	if err := h.hosts.WaitSynced(ctx); err != nil {
		return nil
	}
	return ctl.Run(ctx)
}

// Reconcile checks one host's lease.
func (h *HostLiveness) Reconcile(ctx context.Context, key string) (reconcile.Result, error) {
	obj, ok := h.hosts.Get(key)
	if !ok {
		return reconcile.Result{}, nil
	}
	host := obj.(*api.Host)
	lease := time.Duration(host.Spec.LeaseSeconds) * time.Second
	if lease == 0 {
		lease = api.DefaultHostLeaseSeconds * time.Second
	}
	now := h.Now()
	since := lease + 1
	if hb := host.Status.LastHeartbeat; hb != nil {
		since = now.Sub(*hb)
	}
	if since <= lease {
		// Look again just after the lease would run out.
		return reconcile.Result{RequeueAfter: lease - since + 100*time.Millisecond}, nil
	}
	if h.Leases != nil && h.Leases.Alive(host.Metadata.Name, host.Metadata.UID) {
		// Renewed through its lease, whose end comes as a change; look
		// again now and then all the same.
		return reconcile.Result{RequeueAfter: lease}, nil
	}
	if host.Status.Phase == api.HostNotReady {
		return reconcile.Result{}, nil
	}
	// The lease is checked again on the Host as it is when written: a
	// heartbeat that came meanwhile (a conflict, read again) wins.
	var msg string
	_, wrote, err := client.WriteStatus(ctx, h.Client, h.hosts, host, func(host *api.Host) {
		msg = leaseExpired(host, lease, now, h.Leases != nil)
		if msg == "" || host.Status.Phase == api.HostNotReady || h.Leases != nil && h.Leases.Alive(host.Metadata.Name, host.Metadata.UID) {
			return
		}
		host.Status.Phase = api.HostNotReady
		host.Status.SetCondition(api.Condition{Type: api.ConditionReady, Status: api.ConditionFalse, Reason: api.ReasonLeaseExpired, Message: msg}, now)
	})
	switch {
	case api.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	case wrote:
		h.Recorder.Eventf(ctx, host, api.EventWarning, "HostNotReady", "%s", msg)
	}
	return reconcile.Result{}, nil
}

// leaseExpired says how a host's lease ran out, or "" while it holds.
// With host leases (leases), status.lastHeartbeat is only the last
// status report: the lease itself ran out unseen.
func leaseExpired(host *api.Host, lease time.Duration, now time.Time, leases bool) string {
	hb := host.Status.LastHeartbeat
	switch {
	case hb == nil:
		return "the agent has never reported"
	case leases && now.Sub(*hb) > lease:
		return fmt.Sprintf("no heartbeat from the agent within its lease (%s); its last status report was %s ago", lease, now.Sub(*hb).Round(time.Second))
	case now.Sub(*hb) > lease:
		return fmt.Sprintf("no heartbeat from the agent for %s (lease %s)", now.Sub(*hb).Round(time.Second), lease)
	}
	return ""
}
