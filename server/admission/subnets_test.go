package admission_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/admission"
	"hearth.dev/hearth/server/servertest"
)

func newSubnet(tenant, name, network, cidr string) *api.Subnet {
	return &api.Subnet{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Subnet"},
		Metadata: api.ObjectMeta{Name: name, Tenant: tenant}, Spec: api.SubnetSpec{Network: network, CIDR: cidr}}
}

// wantOverlap checks a refusal: 422 naming spec.cidr with detail.
func wantOverlap(t *testing.T, err error, detail string) {
	t.Helper()
	st, ok := err.(*api.Status)
	if !ok || st.Code != http.StatusUnprocessableEntity || len(st.Fields) != 1 || st.Fields[0].Field != "spec.cidr" || st.Fields[0].Detail != detail {
		t.Fatalf("got %v, want 422 spec.cidr: %s", err, detail)
	}
}

// TestSubnetsOverlap: a subnet overlapping another of its network is
// refused with both named (contained, containing and equal ranges, a
// dry run too), while the same range on another network or in another
// tenant is fine.
func TestSubnetsOverlap(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	env.Tenant("other")
	ctx := servertest.Ctx(t)
	user := env.User("alice", "lab", api.RoleTenantAdmin)
	if _, err := user.Create(ctx, newSubnet("lab", "a", "lan", "10.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, cidr, detail string }{
		{"inside", "10.0.1.0/24", `10.0.1.0/24 overlaps subnet "a" (10.0.0.0/16) on network "lan"; subnets of one network must not share addresses`},
		{"around", "10.0.0.0/8", `10.0.0.0/8 overlaps subnet "a" (10.0.0.0/16) on network "lan"; subnets of one network must not share addresses`},
		{"same", "10.0.0.0/16", `10.0.0.0/16 overlaps subnet "a" (10.0.0.0/16) on network "lan"; subnets of one network must not share addresses`},
	} {
		_, err := user.Create(ctx, newSubnet("lab", c.name, "lan", c.cidr))
		wantOverlap(t, err, c.detail)
		_, err = user.DryRun().Create(ctx, newSubnet("lab", c.name, "lan", c.cidr))
		wantOverlap(t, err, c.detail)
	}
	for _, sn := range []*api.Subnet{
		newSubnet("lab", "beside", "lan", "10.1.0.0/24"),
		newSubnet("lab", "elsewhere", "dmz", "10.0.0.0/16"),
		newSubnet("other", "theirs", "lan", "10.0.0.0/16"),
	} {
		if _, err := env.Admin.Create(ctx, sn); err != nil {
			t.Errorf("create %s/%s %s on %s: %v", sn.Metadata.Tenant, sn.Metadata.Name, sn.Spec.CIDR, sn.Spec.Network, err)
		}
	}
	// Updates that change nothing overlapping still pass.
	if _, err := user.Patch(ctx, "Subnet", "lab", "a", map[string]any{"metadata": map[string]any{"labels": map[string]string{"x": "y"}}}, false); err != nil {
		t.Errorf("label patch of a subnet: %v", err)
	}
}

// TestSubnetsRacingCreates: overlapping subnets created at once on one
// network: exactly one wins, the others are refused for the overlap; and
// the tenant's guard key goes with the tenant.
func TestSubnetsRacingCreates(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	user := env.User("alice", "lab", api.RoleTenantAdmin)

	for round := range 3 {
		network := fmt.Sprintf("net%d", round)
		const writers = 8
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Every one overlaps every other: all hold 10.0.0.0.
				cidr := fmt.Sprintf("10.0.0.0/%d", 16+i)
				_, err := user.Create(ctx, newSubnet("lab", fmt.Sprintf("%s-s%d", network, i), network, cidr))
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		ok := 0
		for err := range errs {
			switch st, _ := err.(*api.Status); {
			case err == nil:
				ok++
			case st == nil || len(st.Fields) != 1 || !strings.Contains(st.Fields[0].Detail, "overlaps subnet"):
				t.Errorf("a racing create failed for another reason than the overlap: %v", err)
			}
		}
		subnets, _, err := user.List(ctx, "Subnet", "lab", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range subnets {
			if s.(*api.Subnet).Spec.Network == network {
				n++
			}
		}
		if ok != 1 || n != 1 {
			t.Fatalf("round %d: %d racing overlapping creates passed and %d subnets exist on %s; want exactly 1", round, ok, n, network)
		}
	}

	guard := admission.SubnetGuardPrefix + "lab"
	if resp, err := env.Server.Etcd().Get(ctx, guard); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("guard key %s: %v, %v; want it there", guard, resp, err)
	}
	if _, err := env.Admin.Delete(ctx, "Tenant", "", "lab"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		resp, err := env.Server.Etcd().Get(ctx, guard)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 0 {
			return fmt.Errorf("guard key %s outlived its tenant", guard)
		}
		return nil
	})
}
