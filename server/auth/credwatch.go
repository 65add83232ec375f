package auth

import (
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// A request that lives long (a watch, a followed log, a console) must not
// outlive its credential: a token revoked, its User deleted, disabled or
// given another role, its Host deleted, or its expiry come, ends it. What
// decides that is in the Authenticator's mirrors, so rather than check
// every such request every few seconds (five watches per agent, a
// thousand agents), the mirrors say which token, User or Host changed and
// only the requests that depend on it check again.

// CredentialWatch tells a long-lived request when its credential must be
// checked again (see Authenticator.WatchCredential).
type CredentialWatch struct {
	// C is closed when something the credential was checked against
	// changed or its expiry came; nil (never ready) for a credential
	// nothing can revoke (the server's own).
	C    <-chan struct{}
	ch   chan struct{}
	once sync.Once
	keys []string
	n    *credNotifier
	exp  *time.Timer
}

// Stop releases the watch. A watch that fired is released already.
func (w *CredentialWatch) Stop() {
	if w.n == nil {
		return
	}
	w.n.remove(w)
	if w.exp != nil {
		w.exp.Stop()
	}
}

func (w *CredentialWatch) fire() { w.once.Do(func() { close(w.ch) }) }

// WatchCredential returns a watch that fires when something p's
// credential was checked against changes: its token record, the User of
// a user's token, the Host of a host's token, or its expiry comes. The
// caller then checks the credential again (Authenticate) and watches
// again. A change made before the watch began is not reported: check
// once after WatchCredential, not only before it.
func (a *Authenticator) WatchCredential(p *Principal) *CredentialWatch {
	if p.Internal || p.Record == nil || p.TokenHash == "" {
		return &CredentialWatch{}
	}
	keys := []string{tokenKey(p.TokenHash)}
	switch p.Record.Kind {
	case api.UserToken:
		keys = append(keys, userKey(p.Record.User))
	case api.HostToken:
		keys = append(keys, hostKey(p.Record.Host))
	}
	ch := make(chan struct{})
	w := &CredentialWatch{C: ch, ch: ch, keys: keys, n: &a.creds}
	a.creds.add(w)
	if e := p.Record.Expires; e != nil {
		// Past the instant, so that the check then finds it expired.
		w.exp = time.AfterFunc(time.Until(*e)+10*time.Millisecond, func() {
			a.creds.remove(w)
			w.fire()
		})
	}
	return w
}

func tokenKey(hash string) string { return "token\x00" + hash }
func userKey(name string) string  { return "user\x00" + name }
func hostKey(name string) string  { return "host\x00" + name }

// credNotifier is who waits on which token, User and Host.
type credNotifier struct {
	mu   sync.Mutex
	subs map[string]map[*CredentialWatch]struct{}
}

func (n *credNotifier) add(w *CredentialWatch) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = map[string]map[*CredentialWatch]struct{}{}
	}
	for _, k := range w.keys {
		if n.subs[k] == nil {
			n.subs[k] = map[*CredentialWatch]struct{}{}
		}
		n.subs[k][w] = struct{}{}
	}
}

func (n *credNotifier) remove(w *CredentialWatch) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.removeLocked(w)
}

func (n *credNotifier) removeLocked(w *CredentialWatch) {
	for _, k := range w.keys {
		delete(n.subs[k], w)
		if len(n.subs[k]) == 0 {
			delete(n.subs, k)
		}
	}
}

// changed fires the watches on key, or every watch for "" (a mirror
// listed again: anything may have changed).
func (n *credNotifier) changed(key string) {
	n.mu.Lock()
	var fired []*CredentialWatch
	if key == "" {
		for _, ws := range n.subs {
			for w := range ws {
				fired = append(fired, w)
			}
		}
	} else {
		for w := range n.subs[key] {
			fired = append(fired, w)
		}
	}
	for _, w := range fired {
		n.removeLocked(w)
	}
	n.mu.Unlock()
	for _, w := range fired {
		if w.exp != nil {
			w.exp.Stop()
		}
		w.fire()
	}
}

// watchMirrors has the mirrors' changes fire the watches.
func (a *Authenticator) watchMirrors() {
	on := func(key func(string) string) func(string) {
		return func(name string) {
			if name == "" {
				a.creds.changed("")
				return
			}
			a.creds.changed(key(name))
		}
	}
	a.tokens.OnChange(on(tokenKey))
	a.users.OnChange(on(userKey))
	a.hostUIDs.OnChange(on(hostKey))
}

// Watching is how many credential watches are registered (tests: none
// must be left behind).
func (a *Authenticator) Watching() int {
	a.creds.mu.Lock()
	defer a.creds.mu.Unlock()
	seen := map[*CredentialWatch]bool{}
	for _, ws := range a.creds.subs {
		for w := range ws {
			seen[w] = true
		}
	}
	return len(seen)
}
