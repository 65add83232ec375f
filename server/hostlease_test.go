package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/servertest"
)

// TestHostLeaseHeartbeat: a host renews its own lease; only the first
// beat (and one after spec.leaseSeconds changed) writes to etcd, the
// rest renew the etcd lease and write nothing; the lease's TTL is the
// Host's lease. No one else may renew a host's lease: not another host,
// not a cluster admin, not a boot service, not a tenant user.
func TestHostLeaseHeartbeat(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	h1 := env.Host("h1")
	rev := func() int64 {
		t.Helper()
		resp, err := env.Server.Etcd().Get(ctx, "/hearth/rev-probe")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	ttl := func() int64 {
		t.Helper()
		resp, err := env.Server.Etcd().Get(ctx, server.HostLeasePrefix+"h1")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("lease key of h1: %v, %d keys", err, len(resp.Kvs))
		}
		tl, err := env.Server.Etcd().TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		if err != nil {
			t.Fatal(err)
		}
		return tl.GrantedTTL
	}
	hb, err := h1.RenewHostLease(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if hb.LeaseSeconds != api.DefaultHostLeaseSeconds || ttl() != api.DefaultHostLeaseSeconds {
		t.Fatalf("lease %d s, etcd TTL %d s; want %d", hb.LeaseSeconds, ttl(), api.DefaultHostLeaseSeconds)
	}
	before := rev()
	for range 5 {
		if _, err := h1.RenewHostLease(ctx, "h1"); err != nil {
			t.Fatal(err)
		}
	}
	if after := rev(); after != before {
		t.Fatalf("five renewals moved etcd from revision %d to %d: a heartbeat wrote", before, after)
	}

	// A changed lease is granted afresh, with the new TTL.
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"leaseSeconds": 7}}, false); err != nil {
		t.Fatal(err)
	}
	if hb, err = h1.RenewHostLease(ctx, "h1"); err != nil || hb.LeaseSeconds != 7 || ttl() != 7 {
		t.Fatalf("after leaseSeconds 7: %+v, %v, TTL %d", hb, err, ttl())
	}

	others := map[string]interface {
		Do(ctx context.Context, method, path string, body any, out any) error
	}{
		"another host":    env.Host("h2"),
		"a cluster admin": env.Admin,
		"a boot service":  env.BootService("boot1"),
		"a viewer":        env.User("auditor", "", api.RoleViewer),
	}
	for who, c := range others {
		err := c.Do(ctx, "POST", api.PathPrefix+"/hosts/h1/heartbeat", nil, nil)
		if !api.IsForbidden(err) {
			t.Errorf("%s renewing h1's lease: %v, want 403", who, err)
		}
	}

	// A deleted Host's credential renews nothing: NotFound until the
	// server has seen its credential revoked, then refused.
	if _, err := env.Admin.Delete(ctx, "Host", "", "h1"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		_, err := h1.RenewHostLease(ctx, "h1")
		switch {
		case api.ReasonOf(err) == api.ReasonUnauthorized:
			return nil
		case api.IsNotFound(err):
			return fmt.Errorf("renewing the lease of a deleted Host: %v, want 401", err)
		}
		t.Fatalf("renewing the lease of a deleted Host: %v, want NotFound and then 401", err)
		return nil
	})
}
