package client_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// TestInformerObserve checks that a version the caller wrote replaces an
// older cached one at once, that the watch does not put an older version
// back over it, and that neither an old version nor one of a deleted
// object is taken once the watch has passed it.
func TestInformerObserve(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	inf := client.NewInformer(env.Admin, "SSHKey", "lab", client.ListOptions{})
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go inf.Run(ictx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	key := servertest.Example("SSHKey", "lab")
	created, err := env.Admin.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	k := client.Key(created)
	rvOf := func() int64 {
		o, ok := inf.Get(k)
		if !ok {
			return 0
		}
		n, _ := strconv.ParseInt(o.GetMetadata().ResourceVersion, 10, 64)
		return n
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if rvOf() == 0 {
			return fmt.Errorf("the informer has not seen the key yet")
		}
		return nil
	})

	// A version from the future (as a write the watch has not brought
	// yet looks) is taken, and stays over what the watch brings before it.
	future := api.DeepCopy(created)
	future.GetMetadata().ResourceVersion = "999999999"
	future.GetMetadata().Labels = map[string]string{"observed": "yes"}
	inf.Observe(future)
	if o, _ := inf.Get(k); o.GetMetadata().Labels["observed"] != "yes" {
		t.Fatalf("Observe of a newer version: the cache still has %s", servertest.JSON(o))
	}
	if _, err := env.Admin.Patch(ctx, "SSHKey", "lab", created.GetMetadata().Name, map[string]any{"metadata": map[string]any{"labels": map[string]string{"by": "watch"}}}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if o, _ := inf.Get(k); o.GetMetadata().Labels["observed"] != "yes" {
		t.Fatalf("the watch put an older version over an observed newer one: %s", servertest.JSON(o))
	}

	// Once the watch has passed a version, observing it changes nothing.
	inf2 := client.NewInformer(env.Admin, "SSHKey", "lab", client.ListOptions{})
	go inf2.Run(ictx)
	if err := inf2.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	inf2.Observe(created)
	if o, _ := inf2.Get(k); o.GetMetadata().ResourceVersion == created.GetMetadata().ResourceVersion {
		t.Fatalf("Observe of an older version replaced the cached one")
	}
	if _, err := env.Admin.Delete(ctx, "SSHKey", "lab", created.GetMetadata().Name); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		if _, ok := inf2.Get(k); ok {
			return fmt.Errorf("the informer still has the deleted key")
		}
		return nil
	})
	inf2.Observe(created)
	if _, ok := inf2.Get(k); ok {
		t.Fatalf("Observe brought a deleted object back")
	}
}

// TestRecorderBackground checks that a background recorder writes every
// event queued, with the moment Eventf was called, even those still
// queued when its context ends, and that a repeat bumps the count.
func TestRecorderBackground(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	obj, err := env.Admin.Create(ctx, servertest.Example("SSHKey", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	rec := client.NewRecorder(env.Admin, "test").Background(rctx)
	before := time.Now().Add(-time.Millisecond)
	for i := range 5 {
		rec.Eventf(ctx, obj, api.EventNormal, "Step", "step %d", i)
	}
	rec.Eventf(ctx, obj, api.EventNormal, "Step", "step %d", 4)
	after := time.Now().Add(time.Millisecond)
	cancel() // what is queued is still written
	servertest.Eventually(t, 10*time.Second, func() error {
		evs, _, err := env.Admin.List(ctx, "Event", "lab", client.ListOptions{})
		if err != nil {
			return err
		}
		if len(evs) != 5 {
			return fmt.Errorf("%d events, want 5", len(evs))
		}
		for _, o := range evs {
			ev := o.(*api.Event)
			want := 1
			if ev.Spec.Message == "step 4" {
				want = 2
			}
			if ev.Spec.Count != want {
				return fmt.Errorf("event %q has count %d, want %d", ev.Spec.Message, ev.Spec.Count, want)
			}
			if ft := *ev.Spec.FirstTimestamp; ft.Before(before) || ft.After(after) {
				return fmt.Errorf("event %q at %v, not when Eventf was called (%v to %v)", ev.Spec.Message, ft, before, after)
			}
		}
		return nil
	})
}

// TestInformerOnChangeUntil checks that a handler registered late hears
// of every cached object first, and that once its context ends it is
// no longer called while the informer and its other handlers go on.
func TestInformerOnChangeUntil(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	inf := client.NewInformer(env.Admin, "SSHKey", "lab", client.ListOptions{})
	go inf.Run(ctx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	create := func() string {
		n++
		key := servertest.Example("SSHKey", "lab")
		key.GetMetadata().Name = fmt.Sprintf("key-%d", n)
		o, err := env.Admin.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return client.Key(o)
	}
	first := create()

	var mu sync.Mutex
	term, all := map[string]bool{}, map[string]bool{}
	seen := func(m map[string]bool, k string) bool {
		mu.Lock()
		defer mu.Unlock()
		return m[k]
	}
	tctx, endTerm := context.WithCancel(ctx)
	inf.OnChangeUntil(tctx, func(key string, _ api.Object) { mu.Lock(); term[key] = true; mu.Unlock() })
	// Registered after: handlers are called in order, so once this one
	// has seen a key, the term's handler has had its turn at it.
	inf.OnChange(func(key string, _ api.Object) { mu.Lock(); all[key] = true; mu.Unlock() })
	servertest.Eventually(t, 10*time.Second, func() error {
		if !seen(term, first) {
			return fmt.Errorf("the late handler was not told of %s, already cached", first)
		}
		return nil
	})
	during := create()
	servertest.Eventually(t, 10*time.Second, func() error {
		if !seen(term, during) {
			return fmt.Errorf("the term's handler did not hear of %s", during)
		}
		return nil
	})

	endTerm()
	servertest.Eventually(t, 10*time.Second, func() error {
		k := create()
		for !seen(all, k) {
			time.Sleep(20 * time.Millisecond)
		}
		if seen(term, k) {
			return fmt.Errorf("the handler of an ended term still heard of %s", k)
		}
		return nil
	})
}

// TestInformerTransform checks that an informer with a transform keeps,
// and shows its handlers, the transformed object, whether it came from
// the list or the watch (as the new version and, at the next change, as
// the old), and that an object given to Observe is kept as given.
func TestInformerTransform(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	listed, err := env.Admin.Create(ctx, servertest.Example("SSHKey", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	inf := client.NewInformer(env.Admin, "SSHKey", "lab", client.ListOptions{})
	inf.SetTransform(func(o api.Object) api.Object {
		m := o.GetMetadata()
		m.Annotations = map[string]string{"shaped": m.ResourceVersion}
		return o
	})
	shaped := func(o api.Object) bool {
		return o == nil || o.GetMetadata().Annotations["shaped"] == o.GetMetadata().ResourceVersion
	}
	var mu sync.Mutex
	var bad []string
	changes := 0
	inf.OnUpdate(func(ch client.Change) {
		mu.Lock()
		defer mu.Unlock()
		changes++
		if !shaped(ch.Old) || !shaped(ch.New) {
			bad = append(bad, fmt.Sprintf("old %s new %s", servertest.JSON(ch.Old), servertest.JSON(ch.New)))
		}
	})
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go inf.Run(ictx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	second := servertest.Example("SSHKey", "lab")
	second.GetMetadata().Name = "bob"
	watched, err := env.Admin.Create(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Patch(ctx, "SSHKey", "lab", listed.GetMetadata().Name, map[string]any{"metadata": map[string]any{"labels": map[string]string{"v": "2"}}}, false); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if changes < 3 {
			return fmt.Errorf("%d changes seen, want 3", changes)
		}
		return nil
	})
	mu.Lock()
	if len(bad) > 0 {
		t.Errorf("handlers saw untransformed objects: %v", bad)
	}
	mu.Unlock()
	for _, o := range []api.Object{listed, watched} {
		got, ok := inf.Get(client.Key(o))
		if !ok || !shaped(got) {
			t.Errorf("cached %s: %s, want it transformed", client.Key(o), servertest.JSON(got))
		}
	}
	mine := api.DeepCopy(watched)
	mine.GetMetadata().ResourceVersion = "999999999"
	inf.Observe(mine)
	if got, _ := inf.Get(client.Key(mine)); got != mine || got.GetMetadata().Annotations != nil {
		t.Errorf("Observe: cached %s, want the caller's object as given", servertest.JSON(got))
	}
}

// TestInformerObserveKeepsTold: after Observe, the watch's change of that
// write still has as Old what the handlers were told before (not the
// observed version), a handler registered meanwhile is told that version
// too, and an object observed before the watch brought it arrives as new.
func TestInformerObserveKeepsTold(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	env.Tenant("lab")
	ctx := servertest.Ctx(t)
	inf := client.NewInformer(env.Admin, "SSHKey", "lab", client.ListOptions{})
	var mu sync.Mutex
	var seen []client.Change
	inf.OnUpdate(func(ch client.Change) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, ch)
	})
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	go inf.Run(ictx)
	if err := inf.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	rv := func(o api.Object) string {
		if o == nil {
			return "none"
		}
		return o.GetMetadata().ResourceVersion
	}
	waitFor := func(n int) []client.Change {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(seen) < n {
				return fmt.Errorf("%d changes, want %d", len(seen), n)
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		return append([]client.Change(nil), seen...)
	}
	v1, err := env.Admin.Create(ctx, servertest.Example("SSHKey", "lab"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(1)
	// The write's change may arrive before Observe or after: either
	// way its Old is v1.
	v2, err := env.Admin.Patch(ctx, "SSHKey", "lab", v1.GetMetadata().Name, map[string]any{"metadata": map[string]any{"labels": map[string]string{"v": "2"}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	future := api.DeepCopy(v2)
	future.GetMetadata().ResourceVersion = "999999998"
	inf.Observe(future)
	other := servertest.Example("SSHKey", "lab")
	other.GetMetadata().Name = "carol"
	otherFuture := api.DeepCopy(other)
	otherFuture.GetMetadata().ResourceVersion = "999999999"
	inf.Observe(otherFuture)
	var late []client.Change
	inf.OnUpdate(func(ch client.Change) {
		mu.Lock()
		defer mu.Unlock()
		late = append(late, ch)
	})
	mu.Lock()
	if len(late) != 1 || client.Key(late[0].New) != client.Key(v1) || rv(late[0].New) != rv(v1) && rv(late[0].New) != rv(v2) {
		t.Errorf("a handler registered after Observe was told %d objects (%+v), want the one told before, not the observed ones", len(late), late)
	}
	mu.Unlock()
	if _, err := env.Admin.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	got := waitFor(3)
	if ch := got[1]; client.Key(ch.New) != client.Key(v1) || rv(ch.Old) != rv(v1) || rv(ch.New) != rv(v2) {
		t.Errorf("the write's change: old %s new %s, want old %s new %s", rv(ch.Old), rv(ch.New), rv(v1), rv(v2))
	}
	if ch := got[2]; client.Key(ch.New) != "lab/carol" || ch.Old != nil {
		t.Errorf("the observed object's arrival: key %s old %s, want lab/carol as new", client.Key(ch.New), rv(ch.Old))
	}
	if o, _ := inf.Get(client.Key(v1)); rv(o) != "999999998" {
		t.Errorf("the cache holds %s, want the observed version still", rv(o))
	}
}
