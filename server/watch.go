package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
	"hearth.dev/hearth/serving"
)

// filter is a list's or watch's label and field selectors.
type filter struct {
	labels api.Selector
	fields func(api.Object) bool
}

// parseFilter reads ?labelSelector= and ?fieldSelector=. Field selectors
// are path=value terms on the object's JSON (spec.host=h1,
// involvedObject.name=web, metadata.name=x); spec. may be left out.
func parseFilter(r *http.Request) (filter, error) {
	q := r.URL.Query()
	sel, err := api.ParseSelector(q.Get("labelSelector"))
	if err != nil {
		return filter{}, api.NewBadRequest("labelSelector: %v", err)
	}
	f := filter{labels: sel, fields: func(api.Object) bool { return true }}
	fs := strings.TrimSpace(q.Get("fieldSelector"))
	if fs == "" {
		return f, nil
	}
	type term struct {
		path []string
		neg  bool
		val  string
	}
	var terms []term
	for _, t := range strings.Split(fs, ",") {
		neg := strings.Contains(t, "!=")
		k, v, ok := strings.Cut(strings.Replace(t, "!=", "=", 1), "=")
		if !ok || k == "" {
			return filter{}, api.NewBadRequest("fieldSelector term %q is not path=value or path!=value", t)
		}
		path := strings.Split(strings.TrimSpace(k), ".")
		switch path[0] {
		case "metadata", "spec", "status":
		default:
			path = append([]string{"spec"}, path...)
		}
		terms = append(terms, term{path, neg, strings.TrimSpace(v)})
	}
	f.fields = func(o api.Object) bool {
		data, _ := json.Marshal(o)
		var doc any
		_ = json.Unmarshal(data, &doc)
		for _, t := range terms {
			cur := doc
			for _, p := range t.path {
				m, _ := cur.(map[string]any)
				cur = m[p]
			}
			got := ""
			if cur != nil {
				got = fmt.Sprint(cur)
			}
			if (got == t.val) == t.neg {
				return false
			}
		}
		return true
	}
	return f, nil
}

// watch streams changes as newline-delimited JSON WatchEvents. A client
// resumes after a disconnect by watching from the last resourceVersion it
// saw; BOOKMARK events move that point forward when nothing it can see
// changes.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	if err := auth.Authorize(p, t.request(auth.Watch)); err != nil {
		return err
	}
	f, err := parseFilter(r)
	if err != nil {
		return err
	}
	from, err := store.ParseRV(r.URL.Query().Get("resourceVersion"))
	if err != nil {
		return err
	}
	ps := prefixes(p, t)
	// A tenant user's watch of a shared-readable kind covers the whole
	// kind, filtered below; every other watch is one prefix.
	prefix := ps[0]
	if len(ps) > 1 {
		prefix = store.KindPrefix(t.kind)
	}
	ctx := r.Context()
	// The previous state matters only where an object can move in or out
	// of what this watcher sees: selectors, and users changing tenant.
	withPrev := len(f.labels) > 0 || r.URL.Query().Get("fieldSelector") != "" || t.kind == s.userKind
	// A watcher that sees everything it asked for gets the stored bytes
	// passed through: no decode and re-encode per event and watcher.
	raw := !withPrev && p.GlobalReader() && (seesCredentials(p) || !hasCredentials(t.kind))
	events, err := s.store.Watch(ctx, t.kind, prefix, from, store.WatchOptions{Prev: withPrev, Raw: raw})
	if err != nil {
		return err
	}
	// A watch lasts as long as its client wants; each write has the
	// write timeout, so a client that stops reading is let go.
	w = serving.For(w, s.limits.WriteTimeout).Stream(w)
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/json; stream=watch")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	// Field selectors match the object as this watcher is shown it (see
	// list).
	visible := func(o api.Object) bool {
		return o != nil && auth.VisibleTo(p, o) && f.labels.Matches(o.GetMetadata().Labels) && f.fields(shown(p, o))
	}
	bookmarks := time.NewTicker(s.bookmarkEvery)
	defer bookmarks.Stop()
	var lastRev int64
	for {
		var ev store.Event
		var ok bool
		select {
		case ev, ok = <-events:
			if !ok {
				return nil
			}
		case <-bookmarks.C:
			// A watch outlives the check of the token it began with: a
			// token revoked since (its User or Host deleted) ends it, and
			// a caller whose role changed watches again under the new one.
			if same, err := s.stillHolds(ctx, r, p); err != nil {
				ev = store.Event{Type: store.Error, Err: err}
				break
			} else if !same {
				return nil
			}
			// etcd's own progress notices are rare; a client that sees
			// nothing for a while still learns how far it has got.
			if lastRev > 0 {
				ev = store.Event{Type: store.Bookmark, Rev: lastRev}
			} else {
				continue
			}
		case <-ctx.Done():
			return nil
		}
		var out api.WatchEvent
		switch {
		case raw && ev.Raw != nil:
			lastRev = ev.Rev
			out = api.WatchEvent{Type: string(ev.Type), Object: json.RawMessage(ev.Raw)}
		case ev.Type == store.Error:
			out = api.WatchEvent{Type: string(store.Error), Object: statusOf(ev.Err)}
		case ev.Type == store.Bookmark:
			lastRev = max(lastRev, ev.Rev)
			out = bookmark(t.kind, lastRev)
		default:
			lastRev = ev.Rev
			now, before := visible(ev.Object), visible(ev.Prev)
			if !withPrev && ev.Type == store.Modified {
				// Nothing this watcher filters on can have changed.
				before = now
			}
			switch {
			case now && ev.Type == store.Modified && !before:
				out = api.WatchEvent{Type: string(store.Added), Object: shown(p, ev.Object)}
			case now:
				out = api.WatchEvent{Type: string(ev.Type), Object: shown(p, ev.Object)}
			case before && ev.Type == store.Modified:
				// It no longer matches: to this watcher it is gone.
				out = api.WatchEvent{Type: string(store.Deleted), Object: shown(p, ev.Object)}
			default:
				continue
			}
		}
		if err := enc.Encode(out); err != nil {
			return nil
		}
		if flusher != nil && len(events) == 0 {
			flusher.Flush()
		}
		if ev.Type == store.Error {
			return nil
		}
	}
}

func bookmark(k *api.KindInfo, rev int64) api.WatchEvent {
	return api.WatchEvent{Type: string(store.Bookmark), Object: map[string]any{
		"apiVersion": api.APIVersion, "kind": k.Kind,
		"metadata": map[string]string{"resourceVersion": strconv.FormatInt(rev, 10)},
	}}
}
