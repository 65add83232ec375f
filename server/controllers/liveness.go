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

// HostLiveness marks a Host NotReady when its agent has not renewed its
// lease (status.lastHeartbeat) within spec.leaseSeconds.
type HostLiveness struct {
	Client   *client.Client
	Recorder *client.Recorder
	Now      func() time.Time
	hosts    *client.Informer
}

// Run runs the controller until ctx ends.
func (h *HostLiveness) Run(ctx context.Context) error {
	if h.Now == nil {
		h.Now = time.Now
	}
	h.hosts = client.NewInformer(h.Client, "Host", "", client.ListOptions{})
	ctl := &reconcile.Controller{Name: "host-liveness", Reconciler: h, Workers: 2, Resync: time.Minute,
		List: func(context.Context) ([]string, error) { return h.hosts.Keys(), nil }}
	h.hosts.OnUpdate(enqueueOwn(ctl, ""))
	go h.hosts.Run(ctx)
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
	if host.Status.Phase == api.HostNotReady {
		return reconcile.Result{}, nil
	}
	// The lease is checked again on the Host as it is when written: a
	// heartbeat that came meanwhile (a conflict, read again) wins.
	var msg string
	_, wrote, err := client.WriteStatus(ctx, h.Client, h.hosts, host, func(host *api.Host) {
		msg = leaseExpired(host, lease, now)
		if msg == "" || host.Status.Phase == api.HostNotReady {
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
func leaseExpired(host *api.Host, lease time.Duration, now time.Time) string {
	hb := host.Status.LastHeartbeat
	switch {
	case hb == nil:
		return "the agent has never reported"
	case now.Sub(*hb) > lease:
		return fmt.Sprintf("no heartbeat from the agent for %s (lease %s)", now.Sub(*hb).Round(time.Second), lease)
	}
	return ""
}
