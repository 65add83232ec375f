package server

import (
	"context"
	"net/http"

	"hearth.dev/hearth/server/auth"
)

// heldCredential is the credential of a request that lives long (a watch,
// a followed log, a console), checked again whenever something it was
// checked against changes (auth.WatchCredential): a revoked token, a
// deleted, disabled or re-roled User, a deleted Host, or the token's
// expiry end the request at once, and nothing is checked while nothing
// changes. (Watches checked every 5 s: five per agent, a thousand
// agents.)
type heldCredential struct {
	s *Server
	r *http.Request
	p *auth.Principal
	w *auth.CredentialWatch
}

// holdCredential begins watching r's credential, which named p when the
// request began, and checks it once: a change between the request's own
// check and the watch's start is not missed. same is false when it now
// names someone else (another role, say); err when it no longer
// authenticates at all.
func (s *Server) holdCredential(ctx context.Context, r *http.Request, p *auth.Principal) (h *heldCredential, same bool, err error) {
	h = &heldCredential{s: s, r: r, p: p, w: s.authn.WatchCredential(p)}
	same, err = s.stillHolds(ctx, r, p)
	return h, same, err
}

// changed is ready when the credential must be checked again (recheck).
func (h *heldCredential) changed() <-chan struct{} { return h.w.C }

// recheck checks the credential again, after changed, and watches it
// from there.
func (h *heldCredential) recheck(ctx context.Context) (same bool, err error) {
	h.w.Stop()
	h.w = h.s.authn.WatchCredential(h.p)
	return h.s.stillHolds(ctx, h.r, h.p)
}

func (h *heldCredential) stop() { h.w.Stop() }
