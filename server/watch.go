package server

import (
	"context"
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
	// index is a field the selector requires to equal indexValue, which
	// indexGet reads without encoding: a watch feed finds the watcher by
	// it. nil when the selector has no such term.
	index      []string
	indexValue string
	indexGet   func(api.Object) string
}

// parseFilter reads ?labelSelector= and ?fieldSelector= for objects of
// kind k. Field selectors are path=value terms on the object's JSON
// (spec.host=h1, involvedObject.name=web, metadata.name=x); spec. may be
// left out.
func parseFilter(r *http.Request, kind *api.KindInfo) (filter, error) {
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
		// get reads the path without encoding the object, when it can.
		get func(api.Object) string
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
		tm := term{path, neg, strings.TrimSpace(v), fieldGetter(kind, path)}
		terms = append(terms, tm)
		if f.index == nil && !tm.neg && tm.get != nil {
			f.index, f.indexValue, f.indexGet = tm.path, tm.val, tm.get
		}
	}
	f.fields = func(o api.Object) bool {
		var doc any
		for _, t := range terms {
			got := ""
			if t.get != nil {
				got = t.get(o)
			} else {
				if doc == nil {
					data, _ := json.Marshal(o)
					_ = json.Unmarshal(data, &doc)
				}
				got = jsonPath(doc, t.path)
			}
			if (got == t.val) == t.neg {
				return false
			}
		}
		return true
	}
	return f, nil
}

// jsonPath reads path in an object's decoded JSON as a selector compares
// it: "" when it is missing.
func jsonPath(doc any, path []string) string {
	cur := doc
	for _, p := range path {
		m, _ := cur.(map[string]any)
		cur = m[p]
	}
	if cur == nil {
		return ""
	}
	return fmt.Sprint(cur)
}

// watch streams changes as newline-delimited JSON WatchEvents. A client
// resumes after a disconnect by watching from the last resourceVersion it
// saw; BOOKMARK events move that point forward when nothing it can see
// changes. Changes come from the kind's feed (feed.go), or from etcd
// directly for a watch from further back than the feed remembers.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	if err := auth.Authorize(p, t.request(auth.Watch)); err != nil {
		return err
	}
	f, err := parseFilter(r, t.kind)
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
	// A host reads only what its scope holds (hostscope.go): an object
	// that leaves it is deleted to the host, and a change of the scope
	// itself ends the watch with Gone, to list again.
	var scopeGone <-chan struct{}
	if auth.HostScoped(p, t.kind) && !placedHere(p, t.kind, f) {
		withPrev = true
		sw, err := s.scope.watch(p.Host, t.kind.Kind, from)
		if err != nil {
			return err
		}
		defer s.scope.unwatch(p.Host, sw)
		scopeGone = sw.gone
	}
	// A watcher that sees everything it asked for gets the stored bytes
	// passed through: no decode and re-encode per event and watcher.
	raw := !withPrev && p.GlobalReader() && (seesCredentials(p) || !hasCredentials(t.kind))
	// Field selectors match the object as this watcher is shown it (see
	// list).
	visible := func(o api.Object) bool {
		return o != nil && auth.VisibleTo(p, o) && f.labels.Matches(o.GetMetadata().Labels) && f.fields(shown(p, o))
	}
	// A watch outlives the check of the token it began with: a token
	// revoked since (its User or Host deleted) ends it, and a caller
	// whose role changed watches again under the new one.
	cred, same, err := s.holdCredential(ctx, r, p)
	defer cred.stop()
	if err != nil {
		return err
	}
	if !same {
		return nil
	}
	src, err := s.watchSource(ctx, t.kind, prefix, from, withPrev, raw, visible, f, p)
	if err != nil {
		return err
	}
	defer src.stop()
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
	bookmarks := time.NewTicker(s.bookmarkEvery)
	defer bookmarks.Stop()
	// lastRev is how far this watcher has seen; lastBookmark what the
	// last bookmark said (a quiet watch is not sent the same again).
	var lastRev, lastBookmark int64
	// Events written are flushed once no more are waiting: a burst goes
	// out in few packets. unflushed says something is written and not
	// yet flushed, which an event this watcher does not see must not
	// hold back (it would wait for the next event it sees, or a bookmark).
	unflushed := false
	// A burst of events is written under one write deadline, set at its
	// first write and lifted once it is flushed (serving.Burst): over
	// HTTP/2 each deadline change is a message to the connection's
	// serving goroutine, which every stream of that client shares.
	burst, _ := w.(serving.Burst)
	// written are when the server read each change written since the
	// last flush from etcd: the flush delivers them
	// (hearth_watch_delivery_seconds).
	var written []time.Time
	delivery := s.metrics.delivery.WithLabelValues("other")
	if p.Host != "" {
		delivery = s.metrics.delivery.WithLabelValues("host")
	}
	flushIfIdle := func() {
		// A burst that never pauses is flushed every 512 events, so
		// that neither the deadline nor written is held without end.
		if unflushed && (src.q.len() == 0 || len(written) >= 512) {
			if flusher != nil {
				flusher.Flush()
			}
			unflushed = false
			if burst != nil {
				burst.Release()
			}
			for _, at := range written {
				delivery.Observe(time.Since(at).Seconds())
			}
			if cap(written) > 64 {
				written = nil // a long burst's: let it go
			} else {
				written = written[:0]
			}
		}
	}
	gone := src.gone
	for {
		var out api.WatchEvent
		var ev *feedEvent
		// line, when set, is the event already encoded (feedEvent.line),
		// written instead of out.
		var line []byte
		ending := false
		select {
		case <-src.q.ready:
			if ev, _ = src.q.pop(); ev == nil {
				continue
			}
		case <-gone:
			// Write what was given before the end, then the error.
			if ev, _ = src.q.pop(); ev == nil {
				ending = true
			}
		case <-scopeGone:
			out, ending = api.WatchEvent{Type: string(store.Error), Object: statusOf(errScopeChanged(p.Host, t.kind.Kind))}, true
		case <-cred.changed():
			if same, err := cred.recheck(ctx); err != nil {
				out, ending = api.WatchEvent{Type: string(store.Error), Object: statusOf(err)}, true
				break
			} else if !same {
				return nil
			}
			continue
		case <-bookmarks.C:
			// etcd's own progress notices are rare; a client that sees
			// nothing for a while still learns how far it has got.
			if rev, ok := src.progress(); ok && rev > lastRev {
				lastRev = rev
			}
			if lastRev == 0 || lastRev == lastBookmark {
				continue
			}
			out = bookmark(t.kind, lastRev)
			lastBookmark = lastRev
		case <-ctx.Done():
			return nil
		}
		switch {
		case ev == nil && ending && out.Type == "":
			if src.err() == nil {
				return nil // the request ended
			}
			out = api.WatchEvent{Type: string(store.Error), Object: statusOf(src.err())}
		case ev == nil:
		case ev.typ == store.Bookmark:
			lastRev = max(lastRev, ev.rev)
			out = bookmark(t.kind, lastRev)
			lastBookmark = lastRev
		case raw && ev.raw != nil:
			lastRev = ev.rev
			if line, err = ev.line(ev.typ, true); err != nil {
				out = api.WatchEvent{Type: string(ev.typ), Object: json.RawMessage(ev.raw)}
			}
		default:
			lastRev = ev.rev
			obj := ev.object()
			now, before := visible(obj), visible(ev.previous())
			if !withPrev && ev.typ == store.Modified {
				// Nothing this watcher filters on can have changed.
				before = now
			}
			typ := ev.typ
			switch {
			case now && ev.typ == store.Modified && !before:
				typ = store.Added
			case now:
			case before && ev.typ == store.Modified:
				// It no longer matches: to this watcher it is gone.
				typ = store.Deleted
			default:
				flushIfIdle()
				continue
			}
			out = api.WatchEvent{Type: string(typ), Object: shown(p, obj)}
			if out.Object == obj {
				// Shown as it is: the encoding every such watcher
				// shares.
				if line, err = ev.line(typ, false); err != nil {
					line = nil
				}
			}
		}
		if burst != nil {
			burst.Hold()
		}
		if line != nil {
			if _, err := w.Write(line); err != nil {
				return nil
			}
		} else if err := enc.Encode(out); err != nil {
			return nil
		}
		unflushed = true
		if ev != nil && !ev.at.IsZero() && ev.typ != store.Bookmark {
			written = append(written, ev.at)
		}
		flushIfIdle()
		if ending {
			if flusher != nil {
				flusher.Flush()
			}
			return nil
		}
	}
}

// watchSource is where one API watch's changes come from.
type watchSource struct {
	q *eventQueue
	// gone is closed when no more changes come; err says why.
	gone <-chan struct{}
	err  func() error
	// progress is the revision the watcher has seen every change up to,
	// once it has written every change it was given.
	progress func() (int64, bool)
	stop     func()
}

// watchSource subscribes to the kind's feed, or, for a watch from before
// what the feed remembers, watches etcd directly.
func (s *Server) watchSource(ctx context.Context, k *api.KindInfo, prefix string, from int64, withPrev, raw bool,
	visible func(api.Object) bool, f filter, p *auth.Principal) (*watchSource, error) {
	fw := &feedWatcher{prefix: prefix, match: func(e *feedEvent) bool {
		return raw || visible(e.object()) || (withPrev && visible(e.previous()))
	}}
	// An index is exact only where the selector sees the object as
	// stored (not a copy with credentials blanked).
	if !raw && f.index != nil && (seesCredentials(p) || !hasCredentials(k)) {
		fw.indexPath, fw.indexValue = strings.Join(f.index, "."), f.indexValue
	}
	fd := s.feeds.feedFor(k)
	ok, err := fd.subscribe(ctx, fw, from, f.indexGet)
	if err != nil {
		return nil, err
	}
	if ok {
		return &watchSource{q: fw.q, gone: fw.gone, err: func() error { return fw.err },
			progress: func() (int64, bool) { return fd.progress(fw) }, stop: func() { fd.unsubscribe(fw) }}, nil
	}
	events, err := s.store.Watch(ctx, k, prefix, from, store.WatchOptions{Prev: withPrev, Raw: raw})
	if err != nil {
		return nil, err
	}
	q := newWaitingEventQueue(64)
	gone := make(chan struct{})
	var werr error
	go func() {
		defer close(gone)
		for ev := range events {
			if ev.Type == store.Error {
				werr = ev.Err
				return
			}
			e := &feedEvent{typ: ev.Type, rev: ev.Rev, key: ev.Key, k: k, raw: ev.Raw, givenObj: ev.Object, givenPrev: ev.Prev}
			if !q.pushWait(ctx, e) {
				return
			}
		}
	}()
	return &watchSource{q: q, gone: gone, err: func() error { return werr },
		progress: func() (int64, bool) { return 0, false }, stop: func() {}}, nil
}

func bookmark(k *api.KindInfo, rev int64) api.WatchEvent {
	return api.WatchEvent{Type: string(store.Bookmark), Object: map[string]any{
		"apiVersion": api.APIVersion, "kind": k.Kind,
		"metadata": map[string]string{"resourceVersion": strconv.FormatInt(rev, 10)},
	}}
}
