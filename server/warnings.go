package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// Warnings are advice about a write that succeeded (or would, in a dry
// run): today, names in the object's spec that name no object. They go in
// HTTP Warning headers, as Kubernetes sends them, `Warning: 299 - "text"`,
// one per warning, so every client sees them and old clients ignore them.

// warnCode is the warn-code of RFC 7234 for a persistent warning.
const warnCode = "299"

// addWarnings sets a Warning header for each message.
func addWarnings(w http.ResponseWriter, msgs []string) {
	for _, m := range msgs {
		w.Header().Add("Warning", warnCode+" - "+quoteWarning(m))
	}
}

// quoteWarning writes a message as an HTTP quoted-string: printable ASCII,
// with quotes and backslashes escaped. Other runes become '?': a header
// carries no more.
func quoteWarning(m string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range m {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// writeWarnings warns about obj, just written by p, before the answer is
// written: every reference of its spec that resolves to nothing, among
// the objects p may read. A failed look-up only costs the warning.
func (s *Server) writeWarnings(ctx context.Context, w http.ResponseWriter, p *auth.Principal, obj api.Object) {
	phaseClockOf(ctx).lap("write")
	if len(api.ReferencesOf(obj)) == 0 {
		return
	}
	lookup := func(kind, tenant, name string) (api.Object, bool, error) {
		k, err := api.KindByName(kind)
		if err != nil {
			return nil, false, err
		}
		if kind != "Subnet" {
			// Only a Subnet's content matters (its network); of the
			// others, that the name resolves: an empty object stands
			// for one, and nothing is read (a Network's status lists
			// every port on it, on every VM's create).
			ok, err := s.store.Exists(ctx, k, tenant, name)
			if !ok || err != nil {
				return nil, false, err
			}
			return k.New(), true, nil
		}
		o, err := s.store.Get(ctx, k, tenant, name)
		if api.IsNotFound(err) {
			return nil, false, nil
		}
		return o, err == nil, err
	}
	// The server reads on the writer's behalf: a tenant learns nothing
	// about objects it could not read itself (a cluster's external
	// networks, say).
	mayRead := func(kind, tenant, name string) bool {
		k, err := api.KindByName(kind)
		return err == nil && auth.Authorize(p, auth.Request{Verb: auth.Get, Kind: k, Tenant: tenant, Name: name}) == nil
	}
	missing, err := api.ResolveReferences(obj, lookup, mayRead)
	if err != nil {
		slog.Debug("checking references for warnings", "object", api.Ref(obj), "err", err)
		return
	}
	msgs := make([]string, len(missing))
	for i, u := range missing {
		msgs[i] = u.String()
	}
	addWarnings(w, msgs)
}
