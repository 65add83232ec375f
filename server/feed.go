package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// Watch feeds: every API watch of a kind shares one etcd watch of the
// kind (its feed), rather than each opening its own. A feed reads each
// change once (one decode, however many watchers), keeps the latest
// feedRing changes so a watcher that reconnects resumes from memory, and
// offers each change only to the watchers it may concern: those
// filtered on a field a feed can index (spec.host=NAME: every agent's
// watches) are found by the changed object's value, before anything is
// decoded or encoded for the others. A thousand agents then cost a
// change a map lookup rather than a thousand decodes and filter passes.
//
// A feed never blocks on a watcher: one whose queue is full is dropped
// with an error that tells it to watch again from the last version it
// saw (client informers do that by themselves), and a watch from a
// version older than the ring reads etcd directly, as every watch did
// before feeds.

// feedRing is how many changes of a kind a feed keeps for watchers that
// resume, and feedRingBytes how many bytes of objects at most: a kind
// whose objects are large (a Network's status lists every port on it)
// keeps fewer changes rather than hundreds of megabytes.
const (
	feedRing      = 4096
	feedRingBytes = 16 << 20
)

// feedQueue is how many changes a watcher may have waiting to be written
// before the feed drops it; feedQueueIndexed for one found by an index
// (an agent's), which is given only changes of its own objects, so a
// thousand of them hold less memory.
const (
	feedQueue        = 1024
	feedQueueIndexed = 256
)

// feeds holds the server's feeds, started at their kind's first watch.
type feeds struct {
	s     *Server
	mu    sync.Mutex
	kinds map[string]*feed
}

// feedFor returns the kind's feed, started if it was not.
func (fs *feeds) feedFor(k *api.KindInfo) *feed {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.kinds == nil {
		fs.kinds = map[string]*feed{}
	}
	f := fs.kinds[k.Kind]
	if f == nil {
		f = &feed{store: fs.s.store, k: k, ready: make(chan struct{}), all: map[*feedWatcher]struct{}{}, indexes: map[string]*feedIndex{}}
		fs.kinds[k.Kind] = f
		go f.run(fs.s.runCtx)
	}
	return f
}

// feed is one kind's shared watch.
type feed struct {
	store *store.Store
	k     *api.KindInfo
	// ready is closed once the feed knows the revision it starts from.
	ready chan struct{}

	mu sync.Mutex
	// rev: every change up to rev has been offered to the watchers.
	rev int64
	// validFrom: every change after validFrom is in the ring or yet to
	// come, so a watch from validFrom or later is served from memory.
	validFrom int64
	ring      []*feedEvent // oldest first, at most feedRing
	ringBytes int          // the objects' bytes in ring
	// latest is the newest change of each key in the ring: the next
	// change of the key shares its bytes as its previous state.
	latest  map[string]*feedEvent
	all     map[*feedWatcher]struct{}
	indexes map[string]*feedIndex // by joined field path
}

// feedIndex finds the watchers filtered on one field's value.
type feedIndex struct {
	get     func(api.Object) string
	byValue map[string]map[*feedWatcher]struct{}
}

// feedEvent is one change as watchers see it. The object and its
// previous state are decoded when first asked for, once.
type feedEvent struct {
	typ          store.EventType
	rev          int64
	key          string
	k            *api.KindInfo
	raw, prevRaw []byte
	// given objects (a watch that reads etcd directly decodes them
	// itself); otherwise they are decoded from raw and prevRaw.
	givenObj, givenPrev api.Object
	// at is when the server read the change from etcd.
	at time.Time
	// err, for a change of an object this server cannot read (a newer
	// Hearth's): it ends every watch whose prefix holds the object, as
	// a watch of its own from etcd would end, and as a list refuses.
	err error

	objOnce, prevOnce sync.Once
	obj, prev         api.Object

	// lines are the change encoded as watchers write it, by type and
	// form (see line): encoded for the first watcher, written as they
	// are for the others. Not kept for a change in the ring (ringed),
	// which lives long after its watchers wrote it.
	linesMu sync.Mutex
	lines   map[lineKey][]byte
	ringed  bool
	// prevShared, for a change in the ring, says its prevRaw is the raw
	// of the key's change before it in the ring (the same bytes, held
	// once); sharedBy is the later change holding this one's raw so.
	prevShared bool
	sharedBy   *feedEvent
}

// size is what a change in the ring holds: its object's bytes, and its
// previous state's unless they are the change before's.
func (e *feedEvent) size() int {
	if e.prevShared {
		return len(e.raw)
	}
	return len(e.raw) + len(e.prevRaw)
}

// lineKey names one encoding of a change: the event type a watcher
// shows it as, and whether it carries the stored bytes (raw) or the
// decoded object.
type lineKey struct {
	typ store.EventType
	raw bool
}

// line returns the change as one line of a watch's stream: the
// WatchEvent of type typ carrying the stored bytes (raw) or the decoded
// object, newline-terminated, as json.Encoder writes it. It is encoded
// once, for the first watcher that writes it; a thousand watchers of a
// kind then cost one encoding, not a thousand. Only for watchers shown
// the object as it is (shown returns it unchanged).
func (e *feedEvent) line(typ store.EventType, raw bool) ([]byte, error) {
	k := lineKey{typ, raw}
	e.linesMu.Lock()
	defer e.linesMu.Unlock()
	if l, ok := e.lines[k]; ok {
		return l, nil
	}
	var obj any = json.RawMessage(e.raw)
	if !raw {
		obj = e.object()
	}
	l, err := json.Marshal(api.WatchEvent{Type: string(typ), Object: obj})
	if err != nil {
		return nil, err
	}
	l = append(l, '\n')
	if e.ringed {
		return l, nil
	}
	if e.lines == nil {
		e.lines = map[lineKey][]byte{}
	}
	e.lines[k] = l
	return l, nil
}

func (e *feedEvent) object() api.Object {
	if e.givenObj != nil || e.raw == nil {
		return e.givenObj
	}
	e.objOnce.Do(func() { e.obj = decodeRaw(e.k, e.raw) })
	return e.obj
}

func (e *feedEvent) previous() api.Object {
	if e.givenPrev != nil || e.prevRaw == nil {
		return e.givenPrev
	}
	e.prevOnce.Do(func() { e.prev = decodeRaw(e.k, e.prevRaw) })
	return e.prev
}

// decodeRaw decodes an object's stored JSON (opened, resourceVersion
// set); nil if it does not decode, which no watcher then sees.
func decodeRaw(k *api.KindInfo, raw []byte) api.Object {
	obj := k.New()
	if err := api.Unmarshal(raw, obj); err != nil {
		slog.Error("watch feed: a stored object does not decode", "kind", k.Kind, "err", err)
		return nil
	}
	return obj
}

// feedWatcher is one API watch on a feed.
type feedWatcher struct {
	prefix string
	// match says whether the watcher sees the change (or saw its object
	// before it).
	match func(*feedEvent) bool
	// indexPath and indexValue, when set, are a field the watcher's
	// selector requires to equal the value (on the object or its
	// previous state) for a change to concern it.
	indexPath, indexValue string
	// q holds the changes given to the watcher and not yet written.
	q *eventQueue
	// gone is closed when the feed drops the watcher; err says why.
	gone chan struct{}
	err  error
}

// subscribe adds a watcher of changes after revision from (0: from now).
// ok is false when from is older than the feed remembers: the caller
// then reads etcd directly.
func (f *feed) subscribe(ctx context.Context, w *feedWatcher, from int64, index func(api.Object) string) (ok bool, err error) {
	select {
	case <-f.ready:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	queue := feedQueue
	if w.indexPath != "" {
		queue = feedQueueIndexed
	}
	w.q = newEventQueue(queue)
	w.gone = make(chan struct{})
	f.mu.Lock()
	defer f.mu.Unlock()
	if from == 0 {
		from = f.rev
	}
	if from < f.validFrom {
		return false, nil
	}
	// Changes the feed has seen since from, then the live ones.
	var replay []*feedEvent
	for _, e := range f.ring {
		if e.rev > from && strings.HasPrefix(e.key, w.prefix) && e.err != nil {
			// An object this server cannot read: a watch from etcd
			// says so.
			return false, nil
		}
		if e.rev > from && strings.HasPrefix(e.key, w.prefix) && w.match(e) {
			replay = append(replay, e)
		}
	}
	if len(replay) > queue {
		return false, nil
	}
	for _, e := range replay {
		w.q.push(e)
	}
	if w.indexPath == "" {
		f.all[w] = struct{}{}
		return true, nil
	}
	ix := f.indexes[w.indexPath]
	if ix == nil {
		ix = &feedIndex{get: index, byValue: map[string]map[*feedWatcher]struct{}{}}
		f.indexes[w.indexPath] = ix
	}
	set := ix.byValue[w.indexValue]
	if set == nil {
		set = map[*feedWatcher]struct{}{}
		ix.byValue[w.indexValue] = set
	}
	set[w] = struct{}{}
	return true, nil
}

// unsubscribe removes a watcher (done with, or dropped).
func (f *feed) unsubscribe(w *feedWatcher) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(w)
}

func (f *feed) removeLocked(w *feedWatcher) {
	if w.indexPath == "" {
		delete(f.all, w)
		return
	}
	if ix := f.indexes[w.indexPath]; ix != nil {
		if set := ix.byValue[w.indexValue]; set != nil {
			delete(set, w)
			if len(set) == 0 {
				delete(ix.byValue, w.indexValue)
			}
		}
		if len(ix.byValue) == 0 {
			delete(f.indexes, w.indexPath)
		}
	}
}

// dropUnreadableLocked ends, with e.err, every watcher whose prefix holds
// the object of e, which this server cannot read. Callers hold mu.
func (f *feed) dropUnreadableLocked(e *feedEvent) {
	for w := range f.all {
		if strings.HasPrefix(e.key, w.prefix) {
			f.dropLocked(w, e.err)
		}
	}
	for _, ix := range f.indexes {
		for _, set := range ix.byValue {
			for w := range set {
				if strings.HasPrefix(e.key, w.prefix) {
					f.dropLocked(w, e.err)
				}
			}
		}
	}
}

// dropLocked ends a watcher with err. Callers hold mu.
func (f *feed) dropLocked(w *feedWatcher, err error) {
	f.removeLocked(w)
	w.err = err
	close(w.gone)
}

// progress returns the revision a watcher may be told it has seen
// everything up to (a bookmark): the feed's, once the watcher has
// written every change the feed gave it.
func (f *feed) progress(w *feedWatcher) (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w.q.len() > 0 {
		return 0, false
	}
	return f.rev, true
}

// offer gives one change to every watcher it concerns.
func (f *feed) offer(ev store.Event) {
	e := &feedEvent{typ: ev.Type, rev: ev.Rev, key: ev.Key, k: f.k, raw: ev.Raw, prevRaw: ev.PrevRaw, err: ev.Err, at: time.Now()}
	f.mu.Lock()
	defer f.mu.Unlock()
	// The ring keeps the bytes only: a replay decodes again, rather than
	// every remembered change holding its decoded objects. A change's
	// previous state is, byte for byte, the key's change before it
	// (etcd sends both, each with its resourceVersion set): when that
	// is in the ring, the two share one copy, here and in the watchers'
	// queues.
	kept := &feedEvent{typ: e.typ, rev: e.rev, key: e.key, k: e.k, raw: e.raw, prevRaw: e.prevRaw, err: e.err, ringed: true}
	if before := f.latest[e.key]; before != nil && e.prevRaw != nil && bytes.Equal(before.raw, e.prevRaw) {
		e.prevRaw, kept.prevRaw = before.raw, before.raw
		kept.prevShared = true
		before.sharedBy = kept
	}
	drop := 0
	for n := len(f.ring); drop < n && (n-drop >= feedRing || f.ringBytes+kept.size() > feedRingBytes); drop++ {
		old := f.ring[drop]
		f.ringBytes -= old.size()
		if f.latest[old.key] == old {
			delete(f.latest, old.key)
		}
		if later := old.sharedBy; later != nil && later.prevShared {
			// The later change now holds these bytes alone.
			later.prevShared = false
			if later != kept {
				f.ringBytes += len(later.prevRaw)
			}
		}
	}
	if drop > 0 {
		f.validFrom = f.ring[drop-1].rev
		n := copy(f.ring, f.ring[drop:])
		clear(f.ring[n:])
		f.ring = f.ring[:n]
	}
	f.ring = append(f.ring, kept)
	f.ringBytes += kept.size()
	if f.latest == nil {
		f.latest = map[string]*feedEvent{}
	}
	if e.typ == store.Deleted || e.err != nil {
		delete(f.latest, e.key)
	} else {
		f.latest[e.key] = kept
	}
	if e.err != nil {
		// Whether it matches a watcher's selector cannot be known
		// without reading it: every watch of its prefix ends.
		f.dropUnreadableLocked(e)
		f.rev = max(f.rev, e.rev)
		return
	}
	give := func(w *feedWatcher) {
		if !strings.HasPrefix(e.key, w.prefix) || !w.match(e) {
			return
		}
		if !w.q.push(e) {
			f.dropLocked(w, api.NewUnavailable("this watch fell %d changes behind and was ended: watch again from the last resourceVersion received", w.q.limit))
		}
	}
	for w := range f.all {
		give(w)
	}
	for _, ix := range f.indexes {
		// The watchers of the object's value now, and of its value before
		// (it may be leaving what they see).
		now, hasNow := "", false
		if o := e.object(); o != nil {
			now, hasNow = ix.get(o), true
			for w := range ix.byValue[now] {
				give(w)
			}
		}
		if o := e.previous(); o != nil {
			if before := ix.get(o); !hasNow || before != now {
				for w := range ix.byValue[before] {
					give(w)
				}
			}
		}
	}
	f.rev = max(f.rev, e.rev)
}

// run keeps the feed's etcd watch going until ctx ends. A broken watch
// resumes from the last revision offered, so watchers notice nothing; a
// compacted one (the feed fell too far behind) ends every watcher with
// Gone, as their own watches would have, and starts again from now.
func (f *feed) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	pause := func() {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	for ctx.Err() == nil {
		if !f.started() {
			resp, err := f.store.Client().Get(ctx, "/hearth/feed-start")
			if err != nil {
				pause()
				continue
			}
			f.restart(resp.Header.Revision, nil)
		}
		f.mu.Lock()
		from := f.rev
		f.mu.Unlock()
		events, err := f.store.Watch(ctx, f.k, store.KindPrefix(f.k), from, store.WatchOptions{Prev: true, Raw: true, GoOn: true})
		if err != nil {
			if api.IsGone(err) {
				f.gone(ctx, err)
			}
			pause()
			continue
		}
		for ev := range events {
			switch ev.Type {
			case store.Error:
				if ev.Key != "" {
					f.offer(ev) // an object this server cannot read
					continue
				}
				if api.IsGone(ev.Err) {
					f.gone(ctx, ev.Err)
				} else if ctx.Err() == nil {
					slog.Debug("watch feed: resuming", "kind", f.k.Kind, "from", from, "err", ev.Err)
					pause()
				}
			case store.Bookmark:
				f.mu.Lock()
				f.rev = max(f.rev, ev.Rev)
				f.mu.Unlock()
			default:
				backoff = 100 * time.Millisecond
				f.offer(ev)
			}
		}
	}
}

func (f *feed) started() bool {
	select {
	case <-f.ready:
		return true
	default:
		return false
	}
}

// gone starts the feed again from etcd's current revision, ending every
// watcher with err.
func (f *feed) gone(ctx context.Context, err error) {
	resp, gerr := f.store.Client().Get(ctx, "/hearth/feed-start")
	if gerr != nil {
		return // tried again with the next watch
	}
	slog.Warn("watch feed: fell behind etcd's compaction; watchers list again", "kind", f.k.Kind)
	f.restart(resp.Header.Revision, err)
}

// restart makes the feed start at rev with nothing remembered, ending its
// watchers with err.
func (f *feed) restart(rev int64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		for w := range f.all {
			f.dropLocked(w, err)
		}
		for _, ix := range f.indexes {
			for _, set := range ix.byValue {
				for w := range set {
					f.dropLocked(w, err)
				}
			}
		}
	}
	f.rev, f.validFrom, f.ring, f.ringBytes, f.latest = rev, rev, nil, 0, nil
	if !f.started() {
		close(f.ready)
	}
}
