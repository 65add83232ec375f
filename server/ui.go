package server

import (
	"encoding/base64"
	"net/http"
	"strings"

	"hearth.dev/hearth/web"
)

// The dashboard (package web) is served at /ui/, and / sends browsers
// there. It is a client of the API like any other: it holds no session
// and reaches nothing the API does not serve.
var dashboard = web.Handler()

// uiRoutes serves the dashboard at /ui/, and sends browsers that ask
// for / or /ui there.
func (s *Server) uiRoutes(mux *http.ServeMux) {
	mux.Handle("GET "+web.Prefix, dashboard)
	mux.Handle("GET /{$}", http.RedirectHandler(web.Prefix, http.StatusFound))
	mux.Handle("GET "+strings.TrimSuffix(web.Prefix, "/"), http.RedirectHandler(web.Prefix, http.StatusMovedPermanently))
}

// Browsers cannot set headers on a websocket, so a browser's console
// carries its bearer token as a websocket subprotocol instead, next to
// the console's own (as Kubernetes does):
//
//	Sec-WebSocket-Protocol: hearth.console.v1, bearer.hearth.dev.<base64url of the token>
//
// The server negotiates ConsoleProtocol only, so the token is never
// echoed back. A token in the subprotocol is no ambient credential (a
// page of another site cannot send it), so it brings none of the
// cross-site risks a cookie would.
const (
	ConsoleProtocol      = "hearth.console.v1"
	bearerProtocolPrefix = "bearer.hearth.dev."
)

// authorization is the request's Authorization header, or for a websocket
// upgrade without one, the bearer token its subprotocols carry.
func authorization(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return h
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), bearerProtocolPrefix)
			if !ok {
				continue
			}
			tok, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
			if err != nil || len(tok) == 0 {
				return "" // answered as no token at all
			}
			return "Bearer " + string(tok)
		}
	}
	return ""
}
