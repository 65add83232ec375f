package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/servertest"
)

// storedTokens reads every token record from etcd.
func storedTokens(t *testing.T, env *servertest.Env) map[string]api.TokenRecord {
	t.Helper()
	resp, err := env.Server.Etcd().Get(servertest.Ctx(t), auth.TokenPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]api.TokenRecord{}
	for _, kv := range resp.Kvs {
		var rec api.TokenRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(string(kv.Key), auth.TokenPrefix)] = rec
	}
	return out
}

// deletions watches etcd from rev and returns, for every key deleted, the
// revision it was deleted at, once want keys matching match were seen.
func deletions(t *testing.T, env *servertest.Env, rev int64, match func(key string) bool, want int) map[string]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]int64{}
	for wr := range env.Server.Etcd().Watch(ctx, "/hearth/", clientv3.WithPrefix(), clientv3.WithRev(rev)) {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete && match(string(ev.Kv.Key)) {
				out[string(ev.Kv.Key)] = ev.Kv.ModRevision
			}
		}
		if len(out) >= want {
			return out
		}
	}
	t.Fatalf("saw %d deletions, want %d: %v", len(out), want, out)
	return nil
}

func etcdRevision(t *testing.T, env *servertest.Env) int64 {
	t.Helper()
	resp, err := env.Server.Etcd().Get(servertest.Ctx(t), "/hearth/ready-probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// refused waits until c's credential is refused, and returns the refusal.
func refused(t *testing.T, c *client.Client) error {
	t.Helper()
	var err error
	servertest.Eventually(t, 5*time.Second, func() error {
		if _, err = c.WhoAmI(servertest.Ctx(t)); api.ReasonOf(err) != api.ReasonUnauthorized {
			return fmt.Errorf("whoami: got %v, want Unauthorized", err)
		}
		return nil
	})
	return err
}

// TestUserTokensBoundToUID: a User's tokens die with it, in the
// transaction that deletes it, and a User made again under the same name
// (here with more power) does not inherit them (audit finding 3).
func TestUserTokensBoundToUID(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("a")
	ctx := servertest.Ctx(t)
	ops := env.User("ops", "a", api.RoleTenantMember)
	if who, err := ops.WhoAmI(ctx); err != nil || who["role"] != string(api.RoleTenantMember) {
		t.Fatalf("whoami as ops: %v %v", who, err)
	}
	var hash string
	for h, rec := range storedTokens(t, env) {
		if rec.User == "ops" {
			hash = h
			if rec.UID == "" {
				t.Errorf("ops's token is not bound to a uid: %+v", rec)
			}
		}
	}
	if hash == "" {
		t.Fatal("no token of ops in etcd")
	}

	rev := etcdRevision(t, env)
	if _, err := env.Admin.Delete(ctx, "User", "", "ops"); err != nil {
		t.Fatal(err)
	}
	userKey := "/hearth/objects/users/ops"
	gone := deletions(t, env, rev+1, func(k string) bool {
		return k == userKey || k == auth.TokenPrefix+hash || strings.HasSuffix(k, "/"+hash)
	}, 3)
	if len(gone) != 3 || gone[userKey] != gone[auth.TokenPrefix+hash] {
		t.Errorf("the User and its token (and its index entry) were not deleted in one transaction: %v", gone)
	}
	refused(t, ops)

	// Made again as a cluster admin: the old token stays refused.
	if _, err := env.Admin.Create(ctx, &api.User{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "User"},
		Metadata: api.ObjectMeta{Name: "ops"}, Spec: api.UserSpec{Role: api.RoleClusterAdmin}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.WhoAmI(ctx); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("the deleted ops's token after ops was made again as cluster admin: got %v, want Unauthorized", err)
	}
	if _, _, err := ops.List(ctx, "User", "", client.ListOptions{}); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("listing users with the deleted ops's token: got %v, want Unauthorized", err)
	}
	// Even a record that escaped deletion (written back by hand) is
	// refused: it names the old uid.
	old := storedTokensBefore(t, env, rev, hash)
	data, _ := json.Marshal(old)
	if _, err := env.Server.Etcd().Put(ctx, auth.TokenPrefix+hash, string(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.WhoAmI(ctx); api.ReasonOf(err) != api.ReasonUnauthorized || !strings.Contains(err.Error(), "no longer exists") {
		t.Fatalf("a token of the old ops restored in etcd: got %v, want Unauthorized", err)
	}
	// The new ops's own tokens work at once.
	fresh := env.User("ops", "", api.RoleClusterAdmin)
	if who, err := fresh.WhoAmI(ctx); err != nil || who["role"] != string(api.RoleClusterAdmin) {
		t.Fatalf("whoami as the new ops: %v %v", who, err)
	}
}

// storedTokensBefore reads the record of hash as etcd had it at rev.
func storedTokensBefore(t *testing.T, env *servertest.Env, rev int64, hash string) api.TokenRecord {
	t.Helper()
	resp, err := env.Server.Etcd().Get(servertest.Ctx(t), auth.TokenPrefix+hash, clientv3.WithRev(rev))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("token %s at revision %d: %v", hash, rev, err)
	}
	var rec api.TokenRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestUserDeletedWhileTokensIssued: tokens issued while the User is being
// deleted either fail or are deleted with it; none outlives it.
func TestUserDeletedWhileTokensIssued(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	for round := 0; round < 5; round++ {
		env.User("busy", "", api.RoleViewer)
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 5; j++ {
					_ = env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/users/busy/tokens", map[string]string{}, nil)
				}
			}()
		}
		time.Sleep(time.Duration(round) * 5 * time.Millisecond)
		if _, err := env.Admin.Delete(ctx, "User", "", "busy"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for _, rec := range storedTokens(t, env) {
			if rec.User == "busy" {
				t.Fatalf("round %d: a token of the deleted user busy outlived it: %+v", round, rec)
			}
		}
	}
}

// TestHostCredentialBoundToHost: deleting a Host deletes its credential in
// the same transaction; a Host made again under the name does not revive
// it; a plain join token cannot take the name over; a join token made for
// the host re-joins it and revokes its older credentials (finding 7).
func TestHostCredentialBoundToHost(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	h1 := env.Host("h1")
	if _, err := h1.Patch(ctx, "Host", "", "h1", map[string]any{"status": map[string]any{"phase": api.HostReady}}, true); err != nil {
		t.Fatalf("a joined host writing its status: %v", err)
	}
	var hash string
	for h, rec := range storedTokens(t, env) {
		if rec.Kind == api.HostToken && rec.Host == "h1" {
			hash = h
		}
	}
	rev := etcdRevision(t, env)
	if _, err := env.Admin.Delete(ctx, "Host", "", "h1"); err != nil {
		t.Fatal(err)
	}
	hostKey := "/hearth/objects/hosts/h1"
	gone := deletions(t, env, rev+1, func(k string) bool { return k == hostKey || k == auth.TokenPrefix+hash }, 2)
	if gone[hostKey] != gone[auth.TokenPrefix+hash] {
		t.Errorf("the Host and its credential were not deleted in one transaction: %v", gone)
	}
	err := refused(t, h1)
	if !strings.Contains(err.Error(), "host credential revoked or Host deleted") {
		t.Errorf("the refusal does not say why: %v", err)
	}

	// An admin makes h1 again: the old credential stays dead.
	h := servertest.Example("Host", "")
	h.GetMetadata().Name = "h1"
	if _, err := env.Admin.Create(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.WhoAmI(ctx); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Fatalf("the old credential after h1 was made again: got %v, want Unauthorized", err)
	}

	// A plain join token does not take an existing name over, and is not
	// spent by trying.
	plain := env.JoinToken(api.TokenRequest{})
	if _, err := env.Join(plain.Token, api.JoinRequest{Host: "h1"}); !api.IsAlreadyExists(err) || !strings.Contains(err.Error(), "hearth token create --join --host h1") {
		t.Fatalf("joining as the existing h1 with a plain join token: got %v, want AlreadyExists saying how", err)
	}
	if _, err := env.Join(plain.Token, api.JoinRequest{Host: "h9"}); err != nil {
		t.Fatalf("the refused join spent the token: %v", err)
	}

	// A join token made for h1 re-joins it, keeps its spec and uid, and
	// revokes the credentials it had.
	cordon := map[string]any{"spec": map[string]any{"unschedulable": true}, "metadata": map[string]any{"labels": map[string]string{"rack": "a"}}}
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", cordon, false); err != nil {
		t.Fatal(err)
	}
	before, _ := env.Admin.Get(ctx, "Host", "", "h1")
	first, err := env.Join(env.JoinToken(api.TokenRequest{Host: "h1"}).Token, api.JoinRequest{Host: "h1"})
	if err != nil {
		t.Fatalf("re-joining h1 with a token made for it: %v", err)
	}
	second, err := env.Join(env.JoinToken(api.TokenRequest{Host: "h1"}).Token, api.JoinRequest{Host: "h1", Address: "192.0.2.99"})
	if err != nil {
		t.Fatalf("re-joining h1 again: %v", err)
	}
	if _, err := env.ClientWithToken(first.Token, "").WhoAmI(ctx); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Errorf("the credential of the first re-join after the second: got %v, want Unauthorized", err)
	}
	if who, err := env.ClientWithToken(second.Token, "").WhoAmI(ctx); err != nil || who["host"] != "h1" {
		t.Errorf("the credential of the second re-join: %v %v", who, err)
	}
	after, _ := env.Admin.Get(ctx, "Host", "", "h1")
	ah, bh := after.(*api.Host), before.(*api.Host)
	if ah.Metadata.UID != bh.Metadata.UID || !ah.Spec.Unschedulable || ah.Metadata.Labels["rack"] != "a" || ah.Spec.Address == "192.0.2.99" {
		t.Errorf("re-joining changed the Host: %s", servertest.JSON(ah))
	}
	// A token made for h1 joins nothing else.
	for _, req := range []api.JoinRequest{{Host: "h2"}, {Host: "h1", Boot: true}} {
		if _, err := env.Join(env.JoinToken(api.TokenRequest{Host: "h1"}).Token, req); !api.IsForbidden(err) {
			t.Errorf("joining %+v with a token made for h1: got %v, want Forbidden", req, err)
		}
	}
}

// TestJoinMakesTheHost: /join makes the Host, with the join token's site
// and labels and the address the host reports; the host may write its
// Host's status and nothing else of it.
func TestJoinMakesTheHost(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	jt := env.JoinToken(api.TokenRequest{Site: "home", Labels: map[string]string{"rack": "a"}})
	jr, err := env.Join(jt.Token, api.JoinRequest{Host: "h1", Address: "192.0.2.21"})
	if err != nil {
		t.Fatal(err)
	}
	if jr.Kind != api.HostToken || jr.Host != "h1" || jr.Site != "home" || jr.Labels["rack"] != "a" {
		t.Errorf("join response: %+v", jr)
	}
	obj, err := env.Admin.Get(ctx, "Host", "", "h1")
	if err != nil {
		t.Fatalf("the Host join made: %v", err)
	}
	h := obj.(*api.Host)
	if h.Spec.Site != "home" || h.Metadata.Labels["rack"] != "a" || h.Spec.Address != "192.0.2.21" || h.Spec.CPUOvercommit != 4 {
		t.Errorf("the Host join made: %s", servertest.JSON(h))
	}
	for _, bad := range []api.JoinRequest{{Host: "Not_A_Name"}, {Host: "h2", Address: "nowhere"}} {
		if _, err := env.Join(env.JoinToken(api.TokenRequest{}).Token, bad); api.ReasonOf(err) != api.ReasonInvalid {
			t.Errorf("join %+v: got %v, want Invalid", bad, err)
		}
	}

	host := env.ClientWithToken(jr.Token, "")
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"unschedulable": true}}, false); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		patch map[string]any
	}{
		{"un-cordon itself", map[string]any{"spec": map[string]any{"unschedulable": false}}},
		{"raise its overcommit", map[string]any{"spec": map[string]any{"cpuOvercommit": 64}}},
		{"move to another site", map[string]any{"spec": map[string]any{"site": "elsewhere"}}},
		{"add labels that attract VMs", map[string]any{"metadata": map[string]any{"labels": map[string]string{"gpu": "true"}}}},
		{"add annotations", map[string]any{"metadata": map[string]any{"annotations": map[string]string{"x": "y"}}}},
	} {
		if _, err := host.Patch(ctx, "Host", "", "h1", tt.patch, false); !api.IsForbidden(err) {
			t.Errorf("the host patching its Host to %s: got %v, want Forbidden", tt.name, err)
		}
	}
	full := api.DeepCopy(h).(*api.Host)
	full.Spec.Unschedulable = false
	full.Metadata.ResourceVersion = ""
	if _, err := host.Update(ctx, full); !api.IsForbidden(err) {
		t.Errorf("the host replacing its Host: got %v, want Forbidden", err)
	}
	other := servertest.Example("Host", "")
	other.GetMetadata().Name = "h3"
	if _, err := host.Create(ctx, other); !api.IsForbidden(err) {
		t.Errorf("the host creating a Host: got %v, want Forbidden", err)
	}
	if _, err := host.Patch(ctx, "Host", "", "h1", map[string]any{"status": map[string]any{"phase": api.HostReady, "cpus": 8}}, true); err != nil {
		t.Errorf("the host writing its Host's status: %v", err)
	}
	obj, _ = env.Admin.Get(ctx, "Host", "", "h1")
	if h := obj.(*api.Host); !h.Spec.Unschedulable || h.Spec.CPUOvercommit != 4 || len(h.Metadata.Labels) != 1 || h.Status.CPUs != 8 {
		t.Errorf("the Host after the host's writes: %s", servertest.JSON(h))
	}
}

// TestJoinTokens: join tokens expire after a day unless asked otherwise,
// are spent by one join unless reusable, and can be revoked.
func TestJoinTokens(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)

	jt := env.JoinToken(api.TokenRequest{})
	if jt.Expires == nil || time.Until(*jt.Expires) < 23*time.Hour || time.Until(*jt.Expires) > 25*time.Hour {
		t.Errorf("a join token made without a TTL expires at %v, want in 24h", jt.Expires)
	}
	if _, err := env.Join(jt.Token, api.JoinRequest{Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Join(jt.Token, api.JoinRequest{Host: "h2"}); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Errorf("a second join with a single-use token: got %v, want Unauthorized", err)
	}

	reusable := env.JoinToken(api.TokenRequest{Reusable: true, TTL: "1h"})
	for _, h := range []string{"r1", "r2", "r3"} {
		if _, err := env.Join(reusable.Token, api.JoinRequest{Host: h}); err != nil {
			t.Fatalf("joining %s with a reusable token: %v", h, err)
		}
	}
	var list struct{ Items []api.TokenRecord }
	if err := env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/jointokens", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].ID != reusable.ID || list.Items[0].Uses != 3 || !list.Items[0].Reusable {
		t.Errorf("join tokens after the joins: %+v, want only the reusable one, used 3 times", list.Items)
	}

	// Revoked: refused at once, and gone from the list.
	if err := env.Admin.Do(ctx, http.MethodDelete, api.PathPrefix+"/jointokens/"+reusable.ID, nil, nil); err != nil {
		t.Fatalf("revoking a join token: %v", err)
	}
	servertest.Eventually(t, 5*time.Second, func() error {
		if _, err := env.Join(reusable.Token, api.JoinRequest{Host: "r4"}); api.ReasonOf(err) != api.ReasonUnauthorized {
			return fmt.Errorf("joining with a revoked join token: got %v, want Unauthorized", err)
		}
		return nil
	})
	if err := env.Admin.Do(ctx, http.MethodDelete, api.PathPrefix+"/jointokens/"+reusable.ID, nil, nil); !api.IsNotFound(err) {
		t.Errorf("revoking it again: got %v, want NotFound", err)
	}
	// User tokens are not join tokens.
	alice := env.User("alice", "", api.RoleViewer)
	var mine struct{ Items []api.TokenRecord }
	if err := env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/users/alice/tokens", nil, &mine); err != nil || len(mine.Items) != 1 {
		t.Fatal(err, mine)
	}
	if err := env.Admin.Do(ctx, http.MethodDelete, api.PathPrefix+"/jointokens/"+mine.Items[0].ID, nil, nil); !api.IsNotFound(err) {
		t.Errorf("revoking a user's token as a join token: got %v, want NotFound", err)
	}
	if err := alice.Do(ctx, http.MethodDelete, api.PathPrefix+"/jointokens/"+jt.ID, nil, nil); !api.IsForbidden(err) {
		t.Errorf("a viewer revoking join tokens: got %v, want Forbidden", err)
	}

	for _, bad := range []map[string]any{{"ttl": "-1h"}, {"ttl": "soon"}, {"labels": map[string]string{"bad key!": "x"}}, {"host": "Not_A_Name"}} {
		if err := env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/jointokens", bad, nil); api.ReasonOf(err) != api.ReasonInvalid {
			t.Errorf("join token %v: got %v, want Invalid", bad, err)
		}
	}
	if err := env.Admin.Do(ctx, http.MethodPost, api.PathPrefix+"/users/alice/tokens", map[string]any{"reusable": true}, nil); api.ReasonOf(err) != api.ReasonInvalid {
		t.Errorf("a reusable user token: got %v, want Invalid", err)
	}
}

// TestSingleUseJoinTokenRace: agents racing with one single-use join
// token: exactly one joins, and exactly one Host is made.
func TestSingleUseJoinTokenRace(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	for round, sameName := range []bool{false, true, false} {
		jt := env.JoinToken(api.TokenRequest{})
		const racers = 8
		errs := make([]error, racers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range racers {
			name := fmt.Sprintf("race%d-%d", round, i)
			if sameName {
				name = fmt.Sprintf("race%d", round)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = env.Join(jt.Token, api.JoinRequest{Host: name})
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case api.ReasonOf(err) != api.ReasonUnauthorized && !api.IsAlreadyExists(err):
				t.Errorf("round %d: a losing join: %v, want Unauthorized (or AlreadyExists for the same name)", round, err)
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d joins with one single-use token succeeded, want 1: %v", round, won, errs)
		}
		hosts, _, err := env.Admin.List(ctx, "Host", "", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		made := 0
		for _, h := range hosts {
			if strings.HasPrefix(h.GetMetadata().Name, fmt.Sprintf("race%d", round)) {
				made++
			}
		}
		if made != 1 {
			t.Errorf("round %d: %d Hosts made, want 1", round, made)
		}
	}
}

// TestHostCredentialsRevocable: cluster admins list and revoke hosts' and
// boot services' credentials; nobody else may.
func TestHostCredentialsRevocable(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	h1, h2 := env.Host("h1"), env.Host("h2")
	boot := env.BootService("boot")
	viewer := env.User("auditor", "", api.RoleViewer)
	for who, c := range map[string]*client.Client{"a host": h1, "a boot service": boot, "a viewer": viewer} {
		if err := c.Do(ctx, http.MethodGet, api.PathPrefix+"/hosttokens", nil, nil); !api.IsForbidden(err) {
			t.Errorf("%s listing host credentials: got %v, want Forbidden", who, err)
		}
	}
	var list struct{ Items []api.TokenRecord }
	if err := env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/hosttokens?host=h1", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Host != "h1" || list.Items[0].Kind != api.HostToken {
		t.Fatalf("h1's credentials: %+v", list.Items)
	}
	if err := h2.Do(ctx, http.MethodDelete, api.PathPrefix+"/hosttokens/"+list.Items[0].ID, nil, nil); !api.IsForbidden(err) {
		t.Errorf("h2 revoking h1's credential: got %v, want Forbidden", err)
	}
	if err := env.Admin.Do(ctx, http.MethodDelete, api.PathPrefix+"/hosttokens/"+list.Items[0].ID, nil, nil); err != nil {
		t.Fatalf("revoking h1's credential: %v", err)
	}
	refused(t, h1)
	if _, err := h2.WhoAmI(ctx); err != nil {
		t.Errorf("h2 after h1's credential was revoked: %v", err)
	}
	if err := env.Admin.Do(ctx, http.MethodGet, api.PathPrefix+"/hosttokens", nil, &list); err != nil {
		t.Fatal(err)
	}
	var bootID string
	for _, r := range list.Items {
		if r.Kind == api.BootToken && r.Host == "boot" {
			bootID = r.ID
		}
	}
	if len(list.Items) != 2 || bootID == "" {
		t.Fatalf("credentials left: %+v, want h2's and the boot service's", list.Items)
	}
	if err := env.Admin.Do(ctx, http.MethodDelete, api.PathPrefix+"/hosttokens/"+bootID, nil, nil); err != nil {
		t.Fatal(err)
	}
	refused(t, boot)
}

// TestHostEvents: a host records events only about its own Host, objects
// placed on it and Images, under its own name, in the object's tenant; a
// boot service only about Machines (finding 13).
func TestHostEvents(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("lab")
	env.Tenant("other")
	h1 := env.Host("h1")
	env.Host("h2")
	boot := env.BootService("boot")
	objs := map[string]api.Object{}
	env.Needs("VirtualMachine", "lab")
	for _, placed := range []struct{ name, host string }{{"on-h1", "h1"}, {"on-h2", "h2"}} {
		vm := servertest.Example("VirtualMachine", "lab")
		vm.GetMetadata().Name = placed.name
		vm.(*api.VirtualMachine).Spec.Host = placed.host
		created, err := env.Admin.Create(ctx, vm)
		if err != nil {
			t.Fatal(err)
		}
		objs[placed.name] = created
	}
	for _, o := range []struct{ kind, tenant, name string }{{"Host", "", "h1"}, {"Host", "", "h2"}} {
		obj, err := env.Admin.Get(ctx, o.kind, o.tenant, o.name)
		if err != nil {
			t.Fatal(err)
		}
		objs[o.name] = obj
	}
	img := servertest.Example("Image", "lab")
	created, err := env.Admin.Create(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	objs["image"] = created
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "node1"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:01"}}
	if objs["node1"], err = env.Admin.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	event := func(source, tenant string, about api.Object, change func(*api.Event)) *api.Event {
		md := about.GetMetadata()
		ev := &api.Event{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Event"}, Metadata: api.ObjectMeta{Name: fmt.Sprintf("ev-%d", time.Now().UnixNano()), Tenant: tenant},
			Spec: api.EventSpec{Source: source, Reason: "Test", Type: api.EventNormal,
				InvolvedObject: api.ObjectReference{Kind: about.GetTypeMeta().Kind, Name: md.Name, Tenant: md.Tenant, UID: md.UID}}}
		if change != nil {
			change(ev)
		}
		return ev
	}
	tests := []struct {
		name string
		c    *client.Client
		ev   *api.Event
		ok   bool
	}{
		{"host: about its VM", h1, event("host/h1", "lab", objs["on-h1"], nil), true},
		{"host: about its Host", h1, event("host/h1", "", objs["h1"], nil), true},
		{"host: about an Image", h1, event("host/h1", "lab", objs["image"], nil), true},
		{"host: about another host's VM", h1, event("host/h1", "lab", objs["on-h2"], nil), false},
		{"host: about another Host", h1, event("host/h1", "", objs["h2"], nil), false},
		{"host: about a Machine", h1, event("host/h1", "", objs["node1"], nil), false},
		{"host: as the server", h1, event("hearth-server", "lab", objs["on-h1"], nil), false},
		{"host: as another host", h1, event("host/h2", "lab", objs["on-h1"], nil), false},
		{"host: in another tenant", h1, event("host/h1", "other", objs["on-h1"], func(e *api.Event) { e.Spec.InvolvedObject.Tenant = "other" }), false},
		{"host: in a tenant, about its Host", h1, event("host/h1", "lab", objs["h1"], func(e *api.Event) { e.Spec.InvolvedObject.Tenant = "lab" }), false},
		{"host: tenant and object disagree", h1, event("host/h1", "other", objs["on-h1"], nil), false},
		{"host: about an object that is not there", h1, event("host/h1", "lab", objs["on-h1"], func(e *api.Event) { e.Spec.InvolvedObject.Name = "ghost" }), false},
		{"host: about a VM of another uid", h1, event("host/h1", "lab", objs["on-h1"], func(e *api.Event) { e.Spec.InvolvedObject.UID = "0000" }), false},
		{"boot: about a Machine", boot, event("boot/boot", "", objs["node1"], nil), true},
		{"boot: about a VM", boot, event("boot/boot", "lab", objs["on-h1"], nil), false},
		{"boot: about a Host", boot, event("boot/boot", "", objs["h1"], nil), false},
		{"boot: as a host", boot, event("host/boot", "", objs["node1"], nil), false},
	}
	for _, tt := range tests {
		_, err := tt.c.Create(ctx, tt.ev)
		if tt.ok && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if !tt.ok && !api.IsForbidden(err) {
			t.Errorf("%s: got %v, want Forbidden", tt.name, err)
		}
	}

	// The recorder's way of repeating an event: bump its count. Only
	// the recorder's own, and only the count.
	rec := client.NewRecorder(h1, "host/h1")
	for range 2 {
		rec.Eventf(ctx, objs["on-h1"], api.EventNormal, "Started", "twice")
	}
	evs, _, err := env.Admin.List(ctx, "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.name=on-h1"})
	if err != nil {
		t.Fatal(err)
	}
	var mine *api.Event
	for _, o := range evs {
		if e := o.(*api.Event); e.Spec.Reason == "Started" {
			mine = e
		}
	}
	if mine == nil || mine.Spec.Count != 2 {
		t.Fatalf("the recorder's repeated event: %s", servertest.JSON(evs))
	}
	server := event("hearth-server", "lab", objs["on-h1"], nil)
	if _, err := env.Admin.Create(ctx, server); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Patch(ctx, "Event", "lab", server.Metadata.Name, map[string]any{"spec": map[string]any{"count": 9}}, false); !api.IsForbidden(err) {
		t.Errorf("the host changing the server's event: got %v, want Forbidden", err)
	}
	if _, err := h1.Patch(ctx, "Event", "lab", mine.Metadata.Name, map[string]any{"spec": map[string]any{"involvedObject": map[string]any{"name": "on-h2"}}}, false); !api.IsForbidden(err) {
		t.Errorf("the host moving its event to another VM: got %v, want Forbidden", err)
	}
}

// TestLegacyTokensBound: tokens stored before tokens were bound to uids
// are bound to the User or Host of their name when the server starts, and
// those whose owner is gone are deleted.
func TestLegacyTokensBound(t *testing.T) {
	dir := t.TempDir()
	env := servertest.Start(t, servertest.WithoutControllers(), servertest.InDir(dir))
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	env.User("alice", "a", api.RoleTenantMember)
	env.Host("h1")
	legacy := map[string]api.TokenRecord{
		"alice": {Kind: api.UserToken, User: "alice"},
		"gone":  {Kind: api.UserToken, User: "nobody"},
		"h1":    {Kind: api.HostToken, Host: "h1"},
		"ghost": {Kind: api.HostToken, Host: "ghost"},
	}
	secrets := map[string]string{}
	for name, rec := range legacy {
		secret := auth.NewSecret(rec.Kind)
		hash := auth.Hash(secret)
		rec.ID, rec.Created = auth.IDOf(hash), time.Now().UTC()
		data, _ := json.Marshal(rec)
		if _, err := env.Server.Etcd().Put(ctx, auth.TokenPrefix+hash, string(data)); err != nil {
			t.Fatal(err)
		}
		secrets[name] = secret
	}
	env.Close()

	env = servertest.Start(t, servertest.WithoutControllers(), servertest.InDir(dir))
	for _, name := range []string{"alice", "h1"} {
		if _, err := env.ClientWithToken(secrets[name], "").WhoAmI(ctx); err != nil {
			t.Errorf("the legacy token of %s after the restart: %v", name, err)
		}
	}
	for _, name := range []string{"gone", "ghost"} {
		if _, ok := storedTokens(t, env)[auth.Hash(secrets[name])]; ok {
			t.Errorf("the legacy token of %s, which does not exist, was kept", name)
		}
	}
	for hash, rec := range storedTokens(t, env) {
		if rec.Kind != api.JoinToken && rec.UID == "" {
			t.Errorf("token %s (%s) is still not bound to a uid", hash[:12], rec.Kind)
		}
	}
	// Bound now: deleting alice takes the legacy token with her.
	if _, err := env.Admin.Delete(ctx, "User", "", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, ok := storedTokens(t, env)[auth.Hash(secrets["alice"])]; ok {
		t.Error("alice's legacy token outlived her")
	}
}

// TestRevokedWatchEnds: a watch does not outlive its token: deleting the
// watcher's User (or Host) ends it with Unauthorized.
func TestRevokedWatchEnds(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	viewer := env.User("watcher", "", api.RoleViewer)
	host := env.Host("h1")
	for who, c := range map[string]*client.Client{"user": viewer, "host": host} {
		events, werr, err := c.WatchOnce(ctx, "Tenant", "", client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if who == "user" {
			_, err = env.Admin.Delete(ctx, "User", "", "watcher")
		} else {
			_, err = env.Admin.Delete(ctx, "Host", "", "h1")
		}
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.After(15 * time.Second)
	drain:
		for {
			select {
			case _, ok := <-events:
				if !ok {
					break drain
				}
			case <-deadline:
				t.Fatalf("the %s's watch goes on after its token died", who)
			}
		}
		if err := werr(); api.ReasonOf(err) != api.ReasonUnauthorized {
			t.Errorf("the %s's watch ended with %v, want Unauthorized", who, err)
		}
	}
}
