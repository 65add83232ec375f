package auth

import (
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestWatchCredential: a credential's watch fires when its token record,
// its User (a user's token) or its Host (a host's token) changes, when a
// mirror lists again, and when the token's expiry comes; not when another
// token, User or Host changes. A watch that fired or stopped is not kept,
// and the server's own credential has nothing to watch.
func TestWatchCredential(t *testing.T) {
	soon := time.Now().Add(time.Second)
	alice := &Principal{Name: "alice", TokenHash: "ha", Record: &api.TokenRecord{Kind: api.UserToken, User: "alice"}}
	h1 := &Principal{Name: "host/h1", Host: "h1", TokenHash: "hh", Record: &api.TokenRecord{Kind: api.HostToken, Host: "h1"}}
	boot := &Principal{Name: "boot/b1", Boot: "b1", TokenHash: "hb", Record: &api.TokenRecord{Kind: api.BootToken, Host: "b1"}}
	expiring := &Principal{Name: "bob", TokenHash: "hx", Record: &api.TokenRecord{Kind: api.UserToken, User: "bob", Expires: &soon}}
	cases := []struct {
		name   string
		p      *Principal
		change string // a key changed; "" a relist; "-" none (wait for expiry)
		fires  bool
	}{
		{"user's token revoked", alice, tokenKey("ha"), true},
		{"user changed", alice, userKey("alice"), true},
		{"another user changed", alice, userKey("bob"), false},
		{"another token revoked", alice, tokenKey("hb"), false},
		{"a host of the user's name", alice, hostKey("alice"), false},
		{"relist", alice, "", true},
		{"host's token revoked", h1, tokenKey("hh"), true},
		{"host deleted", h1, hostKey("h1"), true},
		{"another host deleted", h1, hostKey("h2"), false},
		{"boot token revoked", boot, tokenKey("hb"), true},
		{"boot service's name as a host", boot, hostKey("b1"), false},
		{"expiry", expiring, "-", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &Authenticator{}
			w := a.WatchCredential(tc.p)
			defer w.Stop()
			if tc.change != "-" {
				a.creds.changed(tc.change)
			}
			wait := 50 * time.Millisecond
			if tc.change == "-" {
				wait = 2 * time.Second
			}
			select {
			case <-w.C:
				if !tc.fires {
					t.Fatal("fired")
				}
				if n := a.Watching(); n != 0 {
					t.Errorf("%d watches kept after firing", n)
				}
			case <-time.After(wait):
				if tc.fires {
					t.Fatal("did not fire")
				}
				if n := a.Watching(); n != 1 {
					t.Errorf("%d watches kept, want 1", n)
				}
				w.Stop()
				if n := a.Watching(); n != 0 {
					t.Errorf("%d watches kept after Stop", n)
				}
			}
		})
	}
	a := &Authenticator{}
	if w := a.WatchCredential(&Principal{Name: "system:controllers", Internal: true}); w.C != nil {
		t.Error("the server's own credential has a watch that may fire")
	}
	if n := a.Watching(); n != 0 {
		t.Errorf("%d watches kept for the server's own credential", n)
	}
}
