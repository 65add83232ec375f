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
	h.hosts.OnChangeUntil(ctx, func(key string, _ api.Object) { ctl.Enqueue(key) })
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
	msg := "the agent has never reported"
	if host.Status.LastHeartbeat != nil {
		msg = fmt.Sprintf("no heartbeat from the agent within its lease (%s); its last status report was %s ago", lease, since.Round(time.Second))
	}
	st := host.Status
	st.Phase = api.HostNotReady
	st.SetCondition(api.Condition{Type: "Ready", Status: api.ConditionFalse, Reason: "LeaseExpired", Message: msg}, now)
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": host.Metadata.ResourceVersion},
		"status":   map[string]any{"phase": st.Phase, "conditions": st.Conditions},
	}
	if _, err := h.Client.Patch(ctx, "Host", "", host.Metadata.Name, patch, true); err != nil {
		if api.IsConflict(err) || api.IsNotFound(err) {
			return reconcile.Result{}, nil // the informer brings the newer state
		}
		return reconcile.Result{}, err
	}
	h.Recorder.Eventf(ctx, host, api.EventWarning, "HostNotReady", "%s", msg)
	return reconcile.Result{}, nil
}
