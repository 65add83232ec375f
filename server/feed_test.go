package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/store"
)

// newTestFeed is a feed with no etcd behind it: tests offer it changes.
func newTestFeed(t *testing.T, kind string) *feed {
	k, err := api.KindByName(kind)
	if err != nil {
		t.Fatal(err)
	}
	f := &feed{k: k, ready: make(chan struct{}), all: map[*feedWatcher]struct{}{}, indexes: map[string]*feedIndex{}}
	f.restart(1, nil)
	return f
}

// testWatcher subscribes a watcher with the given selectors, made as the
// API's watch handler makes it.
func testWatcher(t *testing.T, f *feed, p *auth.Principal, labels, fields string, from int64) (*feedWatcher, bool) {
	t.Helper()
	q := url.Values{"labelSelector": {labels}, "fieldSelector": {fields}}
	r, _ := http.NewRequest(http.MethodGet, "https://hearth/?"+q.Encode(), nil)
	flt, err := parseFilter(r, f.k)
	if err != nil {
		t.Fatal(err)
	}
	visible := func(o api.Object) bool {
		return o != nil && auth.VisibleTo(p, o) && flt.labels.Matches(o.GetMetadata().Labels) && flt.fields(shown(p, o))
	}
	withPrev := labels != "" || fields != ""
	raw := !withPrev && p.GlobalReader()
	w := &feedWatcher{prefix: store.KindPrefix(f.k), match: func(e *feedEvent) bool {
		return raw || visible(e.object()) || (withPrev && visible(e.previous()))
	}}
	if !raw && flt.index != nil {
		w.indexPath, w.indexValue = strings.Join(flt.index, "."), flt.indexValue
	}
	ok, err := f.subscribe(context.Background(), w, from, flt.indexGet)
	if err != nil {
		t.Fatal(err)
	}
	return w, ok
}

func vmJSON(t *testing.T, name, host string, labels map[string]string, rev int64) []byte {
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: "lab", UID: "uid-" + name, Labels: labels, ResourceVersion: fmt.Sprint(rev)},
		Spec:     api.VirtualMachineSpec{Host: host}}
	data, err := json.Marshal(vm)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestFeedIndexMatchesEveryWatcher: with random changes of VMs (created,
// bound, relabelled, deleted), the watchers a feed offers each change to
// through its spec.host index are exactly those a check of every watcher
// finds, and each receives its changes in order.
func TestFeedIndexMatchesEveryWatcher(t *testing.T) {
	f := newTestFeed(t, "VirtualMachine")
	admin := &auth.Principal{Name: "admin", Role: api.RoleClusterAdmin}
	type sub struct {
		w    *feedWatcher
		got  []int64
		want []int64
	}
	var subs []*sub
	add := func(labels, fields string) {
		w, ok := testWatcher(t, f, admin, labels, fields, 0)
		if !ok {
			t.Fatal("a watch from now was refused")
		}
		subs = append(subs, &sub{w: w})
	}
	for h := range 10 {
		add("", fmt.Sprintf("spec.host=h%d", h))
	}
	add("", "spec.host=")                     // indexed on the empty value: unplaced VMs
	add("app=db", "spec.host=h1")             // index and labels
	add("app=db", "")                         // labels only
	add("", "spec.host!=h2")                  // a negation: not indexed
	add("", "spec.host=h3,metadata.name=vm3") // two terms
	add("", "")                               // everything, passed through
	indexed := 0
	for _, s := range subs {
		if s.w.indexPath != "" {
			indexed++
		}
	}
	if indexed != 13 {
		t.Fatalf("%d watchers indexed, want 13", indexed)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	type vmState struct {
		host   string
		labels map[string]string
		raw    []byte
	}
	vms := map[string]*vmState{}
	rev := int64(1)
	for step := range 3000 {
		rev++
		name := fmt.Sprintf("vm%d", rng.IntN(40))
		cur := vms[name]
		host := ""
		if rng.IntN(3) > 0 {
			host = fmt.Sprintf("h%d", rng.IntN(12))
		}
		labels := map[string]string{}
		if rng.IntN(2) == 0 {
			labels["app"] = "db"
		}
		ev := store.Event{Rev: rev, Key: store.Key(f.k, "lab", name)}
		switch {
		case cur == nil:
			ev.Type, ev.Raw = store.Added, vmJSON(t, name, host, labels, rev)
			vms[name] = &vmState{host, labels, ev.Raw}
		case rng.IntN(5) == 0:
			ev.Type, ev.Raw = store.Deleted, vmJSON(t, name, cur.host, cur.labels, rev)
			delete(vms, name)
		default:
			ev.Type, ev.Raw, ev.PrevRaw = store.Modified, vmJSON(t, name, host, labels, rev), cur.raw
			vms[name] = &vmState{host, labels, ev.Raw}
		}
		// What a check of every watcher finds.
		probe := &feedEvent{typ: ev.Type, rev: ev.Rev, key: ev.Key, k: f.k, raw: ev.Raw, prevRaw: ev.PrevRaw}
		for _, s := range subs {
			if s.w.match(probe) {
				s.want = append(s.want, rev)
			}
		}
		f.offer(ev)
		for _, s := range subs {
			for s.w.q.len() > 0 {
				s.got = append(s.got, s.w.q.next(t).rev)
			}
		}
		_ = step
	}
	for i, s := range subs {
		if fmt.Sprint(s.got) != fmt.Sprint(s.want) {
			t.Errorf("watcher %d (%s=%s): got %d changes, want %d\n got %v\nwant %v", i, s.w.indexPath, s.w.indexValue, len(s.got), len(s.want), s.got, s.want)
		}
		if len(s.want) == 0 {
			t.Errorf("watcher %d saw nothing: the test proves little", i)
		}
	}
}

// TestFeedResumeAndDrop: a watch from a revision the ring still holds is
// given what it missed; one from before it is refused (the API then
// reads etcd); a watcher that lets feedQueue changes pile up is dropped
// with an error, and the feed goes on for the others.
func TestFeedResumeAndDrop(t *testing.T) {
	f := newTestFeed(t, "VirtualMachine")
	admin := &auth.Principal{Name: "admin", Role: api.RoleClusterAdmin}
	offer := func(rev int64, host string) {
		f.offer(store.Event{Type: store.Added, Rev: rev, Key: store.Key(f.k, "lab", fmt.Sprint("vm", rev)),
			Raw: vmJSON(t, fmt.Sprint("vm", rev), host, nil, rev)})
	}
	slow, _ := testWatcher(t, f, admin, "", "", 0)
	busy, _ := testWatcher(t, f, admin, "", "spec.host=h1", 0)
	for rev := int64(2); rev < int64(2+feedRing+10); rev++ {
		host := "h2"
		if rev%10 == 0 {
			host = "h1"
		}
		offer(rev, host)
		for busy.q.len() > 0 {
			busy.q.next(t)
		}
	}
	select {
	case <-slow.gone:
		if !strings.Contains(slow.err.Error(), "fell") {
			t.Fatalf("dropped with %v", slow.err)
		}
	default:
		t.Fatal("a watcher that read nothing was not dropped")
	}
	select {
	case <-busy.gone:
		t.Fatalf("a watcher that kept up was dropped: %v", busy.err)
	default:
	}
	last := int64(2 + feedRing + 9)
	// Resume from the middle of the ring: the h1 changes after it.
	w, ok := testWatcher(t, f, admin, "", "spec.host=h1", last-25)
	if !ok {
		t.Fatal("a watch from inside the ring was refused")
	}
	var got, want []int64
	for w.q.len() > 0 {
		got = append(got, w.q.next(t).rev)
	}
	for rev := last - 24; rev <= last; rev++ {
		if rev%10 == 0 {
			want = append(want, rev)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resumed with %v, want the two h1 changes after %d", got, last-25)
	}
	if _, ok := testWatcher(t, f, admin, "", "", 5); ok {
		t.Fatal("a watch from before the ring was served from it")
	}
	if rev, ok := f.progress(busy); !ok || rev != last {
		t.Fatalf("progress %d, %v; want %d", rev, ok, last)
	}
}

// TestFeedRingBytes: a feed of large objects keeps at most feedRingBytes
// of them, not feedRing changes; a watch from a change it let go is
// refused (the API then reads etcd), one from a change it kept is given
// every change since.
func TestFeedRingBytes(t *testing.T) {
	f := newTestFeed(t, "VirtualMachine")
	admin := &auth.Principal{Name: "admin", Role: api.RoleClusterAdmin}
	big := map[string]string{"pad": strings.Repeat("x", 256<<10)}
	const changes = 200 // 50 MiB in all
	for rev := int64(2); rev < 2+changes; rev++ {
		f.offer(store.Event{Type: store.Added, Rev: rev, Key: store.Key(f.k, "lab", fmt.Sprint("vm", rev)),
			Raw: vmJSON(t, fmt.Sprint("vm", rev), "h1", big, rev)})
	}
	f.mu.Lock()
	kept, bytes, validFrom := len(f.ring), f.ringBytes, f.validFrom
	f.mu.Unlock()
	if bytes > feedRingBytes || kept >= changes || kept == 0 {
		t.Fatalf("the ring keeps %d changes, %d bytes; want at most %d bytes", kept, bytes, feedRingBytes)
	}
	if _, ok := testWatcher(t, f, admin, "", "", validFrom-1); ok {
		t.Fatalf("a watch from %d, before what the ring keeps (%d), was served from it", validFrom-1, validFrom)
	}
	w, ok := testWatcher(t, f, admin, "", "", validFrom)
	if !ok {
		t.Fatal("a watch from the ring's oldest change was refused")
	}
	if n := w.q.len(); n != kept {
		t.Fatalf("a watch from %d was given %d changes, want %d", validFrom, n, kept)
	}
}

// TestFeedLineMatchesEncoder: the line a feed encodes once for every
// watcher of a change is, byte for byte, what each watcher's own
// json.Encoder wrote before: for the stored bytes and for the decoded
// object, under every event type a watcher may show the change as.
func TestFeedLineMatchesEncoder(t *testing.T) {
	f := newTestFeed(t, "VirtualMachine")
	raw := vmJSON(t, "web", "h1", map[string]string{"tier": "<web>&"}, 7)
	e := &feedEvent{typ: store.Modified, rev: 7, key: "k", k: f.k, raw: raw}
	for _, typ := range []store.EventType{store.Added, store.Modified, store.Deleted} {
		for _, isRaw := range []bool{true, false} {
			var want bytes.Buffer
			var obj any = json.RawMessage(raw)
			if !isRaw {
				obj = e.object()
			}
			if err := json.NewEncoder(&want).Encode(api.WatchEvent{Type: string(typ), Object: obj}); err != nil {
				t.Fatal(err)
			}
			for range 2 { // encoded, then remembered
				got, err := e.line(typ, isRaw)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want.Bytes()) {
					t.Errorf("%s raw=%v: got\n%s\nwant\n%s", typ, isRaw, got, want.Bytes())
				}
			}
		}
	}
	// A change kept in the ring (replayed to watchers that resume) does
	// not keep its encodings: the ring would hold them as long as it
	// holds the change.
	kept := &feedEvent{typ: store.Modified, rev: 7, key: "k", k: f.k, raw: raw, ringed: true}
	if _, err := kept.line(store.Modified, true); err != nil {
		t.Fatal(err)
	}
	if len(kept.lines) != 0 {
		t.Errorf("a ring entry kept %d encodings", len(kept.lines))
	}
}

// TestFeedRingSharesPrevious: a change's previous state, which etcd sends
// as a copy of the key's change before, is held once in the ring, not
// twice: a hundred changes of one VM keep about a hundred objects' bytes,
// not two hundred (the ring held both copies before). The accounting
// stays exact as the ring drops its oldest changes, and a watcher that
// resumes from the ring still sees each change's previous state (a VM
// moved off the host it watches is deleted to it).
func TestFeedRingSharesPrevious(t *testing.T) {
	f := newTestFeed(t, "VirtualMachine")
	pad := map[string]string{"pad": strings.Repeat("x", 10<<10)}
	key := store.Key(f.k, "lab", "web")
	var prev []byte
	const changes = 100
	for rev := int64(2); rev < 2+changes; rev++ {
		host := "h1"
		if rev == 1+changes {
			host = "h2" // the last change moves it away
		}
		raw := vmJSON(t, "web", host, pad, rev)
		// etcd's previous value is its own copy of the bytes.
		f.offer(store.Event{Type: store.Modified, Rev: rev, Key: key, Raw: raw, PrevRaw: bytes.Clone(prev)})
		prev = raw
	}
	f.mu.Lock()
	held, size := f.ringBytes, 0
	for _, e := range f.ring {
		size += len(e.raw)
	}
	f.mu.Unlock()
	if held > size+size/changes+1 {
		t.Errorf("the ring holds %d bytes for %d changes of %d bytes: the previous states are held again", held, changes, size/changes)
	}

	admin := &auth.Principal{Name: "admin", Role: api.RoleClusterAdmin}
	w, ok := testWatcher(t, f, admin, "", "spec.host=h1", 1)
	if !ok {
		t.Fatal("a watch from the ring's start was refused")
	}
	if got, want := w.q.len(), changes; got != want {
		t.Fatalf("the watcher of h1 was given %d changes, want %d (the last as leaving h1)", got, want)
	}
	for range changes - 1 {
		w.q.next(t)
	}
	last := w.q.next(t)
	if p, _ := last.previous().(*api.VirtualMachine); p == nil || p.Spec.Host != "h1" {
		t.Errorf("the last change's previous state is %+v, want the VM on h1", last.previous())
	}

	// Many more changes of many keys: the ring drops its oldest, and
	// what it counts is what it holds.
	big := map[string]string{"pad": strings.Repeat("y", 200<<10)}
	prevs := map[string][]byte{}
	for rev := int64(2 + changes); rev < 2+changes+400; rev++ {
		name := fmt.Sprint("vm", rev%7)
		raw := vmJSON(t, name, "h1", big, rev)
		f.offer(store.Event{Type: store.Modified, Rev: rev, Key: store.Key(f.k, "lab", name), Raw: raw, PrevRaw: bytes.Clone(prevs[name])})
		prevs[name] = raw
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	counted := 0
	for _, e := range f.ring {
		counted += len(e.raw)
		if !e.prevShared {
			counted += len(e.prevRaw)
		}
	}
	if counted != f.ringBytes || f.ringBytes > feedRingBytes {
		t.Errorf("the ring counts %d bytes, holds %d; at most %d", f.ringBytes, counted, feedRingBytes)
	}
}
