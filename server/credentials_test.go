package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestWatchEndsWithCredential: a watch ends as soon as its credential
// stops holding, whichever way: its token revoked or expired, its User
// disabled, deleted or given another role (that one ends cleanly, to be
// watched again under the new role), its Host deleted. A change to
// someone else's credential leaves it running. The server learns these
// from its mirrors of tokens, Users and Hosts, not by checking every
// watch every few seconds; each case must end within a few seconds.
func TestWatchEndsWithCredential(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	// token makes a user (cluster-wide viewer) with a fresh token of
	// ttl ("": none) and returns a client with it and the token's id.
	token := func(user, ttl string) (*client.Client, string) {
		t.Helper()
		env.User(user, "", api.RoleViewer)
		tok, err := env.Admin.CreateToken(ctx, client.UserTokens(user), api.TokenRequest{TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return env.ClientWithToken(tok.Token, ""), tok.ID
	}
	patchUser := func(name string, spec map[string]any) func() error {
		return func() error {
			_, err := env.Admin.Patch(ctx, "User", "", name, map[string]any{"spec": spec}, false)
			return err
		}
	}
	cases := []struct {
		name string
		// setup returns the watcher and what ends its credential.
		setup func() (*client.Client, func() error)
		// want is the reason the watch ends with ("": it ends cleanly;
		// "running": it does not end).
		want api.Reason
	}{
		{"token revoked", func() (*client.Client, func() error) {
			c, id := token("revoked", "")
			return c, func() error { return env.Admin.RevokeToken(ctx, client.UserTokens("revoked"), id) }
		}, api.ReasonUnauthorized},
		{"token expired", func() (*client.Client, func() error) {
			c, _ := token("expiring", "3s")
			return c, func() error { return nil }
		}, api.ReasonUnauthorized},
		{"user disabled", func() (*client.Client, func() error) {
			c, _ := token("disabled", "")
			return c, patchUser("disabled", map[string]any{"disabled": true})
		}, api.ReasonUnauthorized},
		{"user deleted", func() (*client.Client, func() error) {
			c, _ := token("deleted", "")
			return c, func() error { _, err := env.Admin.Delete(ctx, "User", "", "deleted"); return err }
		}, api.ReasonUnauthorized},
		{"role changed", func() (*client.Client, func() error) {
			c, _ := token("promoted", "")
			return c, patchUser("promoted", map[string]any{"role": api.RoleClusterAdmin})
		}, ""},
		{"host deleted", func() (*client.Client, func() error) {
			c := env.Host("h1")
			return c, func() error { _, err := env.Admin.Delete(ctx, "Host", "", "h1"); return err }
		}, api.ReasonUnauthorized},
		{"someone else's credential", func() (*client.Client, func() error) {
			c, _ := token("bystander", "")
			env.User("other", "", api.RoleViewer)
			return c, func() error { _, err := env.Admin.Delete(ctx, "User", "", "other"); return err }
		}, "running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, end := tc.setup()
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			events, werr, err := c.WatchOnce(wctx, "Tenant", "", client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := end(); err != nil {
				t.Fatal(err)
			}
			ended := time.Now()
			limit := 4 * time.Second
			if tc.name == "token expired" {
				limit += 3 * time.Second
			}
			deadline := time.After(limit)
			for {
				select {
				case _, ok := <-events:
					if ok {
						continue
					}
					if tc.want == "running" {
						t.Fatalf("the watch ended: %v", werr())
					}
					if got := api.ReasonOf(werr()); got != tc.want {
						t.Fatalf("the watch ended with %v, want %q", werr(), tc.want)
					}
					t.Logf("ended %s after", time.Since(ended).Round(time.Millisecond))
					return
				case <-deadline:
					if tc.want != "running" {
						t.Fatalf("the watch goes on %s after", limit)
					}
					// Still running, and still delivering.
					name := fmt.Sprintf("t-%d", time.Now().UnixNano())
					if _, err := env.Admin.Create(ctx, &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: name}}); err != nil {
						t.Fatal(err)
					}
					for ev := range events {
						if ev.Object != nil && ev.Object.GetMetadata().Name == name {
							return
						}
					}
					t.Fatalf("the watch ended before the new tenant: %v", werr())
				}
			}
		})
	}
}
