// Package store keeps Hearth's objects in etcd, the only source of truth.
//
// Each object is one etcd key holding its JSON; its resourceVersion is the
// key's mod revision, so every update can be made conditional on what the
// writer read (409 otherwise) and watches can resume from any revision etcd
// still holds. Allocations an object holds (a VNI, an IP) are written in the
// same transaction as the object, so a crash never leaves one without the
// other.
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Prefix is where objects live in etcd.
const Prefix = "/hearth/objects/"

// clusterSegment stands in the tenant position of a TenantOptional kind's
// cluster-level objects. No tenant can be named "_".
const clusterSegment = "_"

// Hooks lets a kind take part in the transaction that creates or deletes
// its objects, for allocations held by the object.
type Hooks interface {
	// OnCreate may change obj (record the allocation in its status) and
	// returns the comparisons and writes to commit with it. It is called
	// again if the transaction loses a race.
	OnCreate(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error)
	// OnDelete returns the comparisons and writes that release obj's
	// allocations, committed with its deletion. It may read what obj
	// holds through kv; a comparison that guards that read (nothing was
	// added since) makes a lost race read again. It is called again if
	// the transaction loses a race.
	OnDelete(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error)
}

// UpdateHooks is what Hooks may also implement to take part in updates
// (spec and status writes alike) of objects that are not being deleted:
// reallocate what a changed spec asks for, release what it no longer
// does, and keep the fields the allocations own as the allocator wrote
// them whoever writes the status. OnUpdate may change next; old is the
// stored object. It is called again if the transaction loses a race.
type UpdateHooks interface {
	OnUpdate(ctx context.Context, kv clientv3.KV, old, next api.Object) ([]clientv3.Cmp, []clientv3.Op, error)
}

// Store reads and writes objects in etcd.
type Store struct {
	c       *clientv3.Client
	kv      *sessionKV // c's KV, for reads that may be in a read session (reads.go)
	hooks   map[string][]Hooks
	sealers map[string]Sealer
	now     func() time.Time
}

// New returns a store on an etcd client.
func New(c *clientv3.Client) *Store {
	return &Store{c: c, kv: &sessionKV{KV: c.KV}, hooks: map[string][]Hooks{}, sealers: map[string]Sealer{}, now: time.Now}
}

// Client returns the etcd client, for the few callers (auth, leader
// election) that keep their own keys.
func (s *Store) Client() *clientv3.Client { return s.c }

// SetHooks installs allocation hooks for a kind, after any it has: each
// adds its comparisons and writes to the same transaction, in order.
func (s *Store) SetHooks(kind string, h Hooks) { s.hooks[kind] = append(s.hooks[kind], h) }

type attemptKey struct{}

// Attempt is how many times the transaction of the write a hook is called
// for has lost a race already (0 the first time). Allocators use it to
// spread racing writers over free values instead of all asking again for
// the lowest.
func Attempt(ctx context.Context) int {
	n, _ := ctx.Value(attemptKey{}).(int)
	return n
}

func withAttempt(ctx context.Context, n int) context.Context {
	if n == 0 {
		return ctx
	}
	return context.WithValue(ctx, attemptKey{}, n)
}

// KindPrefix is the etcd prefix of every object of a kind.
func KindPrefix(k *api.KindInfo) string { return Prefix + k.Plural + "/" }

// TenantPrefix is the prefix of a tenant's objects of a kind; tenant ""
// selects the cluster-level objects of a TenantOptional kind.
func TenantPrefix(k *api.KindInfo, tenant string) string {
	if k.Scope == api.ClusterScoped {
		return KindPrefix(k)
	}
	if tenant == "" {
		tenant = clusterSegment
	}
	return KindPrefix(k) + tenant + "/"
}

// Key is an object's etcd key.
func Key(k *api.KindInfo, tenant, name string) string { return TenantPrefix(k, tenant) + name }

func kindOf(obj api.Object) (*api.KindInfo, error) {
	k, err := api.KindByName(obj.GetTypeMeta().Kind)
	if err != nil {
		return nil, api.NewBadRequest("%v", err)
	}
	return k, nil
}

func keyOf(obj api.Object) (*api.KindInfo, string, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, "", err
	}
	m := obj.GetMetadata()
	return k, Key(k, m.Tenant, m.Name), nil
}

// encode writes an object without its resourceVersion, which etcd keeps,
// sealed if its kind has a Sealer.
func (s *Store) encode(k *api.KindInfo, key string, obj api.Object) (string, error) {
	data, err := encode(obj)
	if err != nil {
		return "", err
	}
	if sl := s.sealers[k.Kind]; sl != nil {
		sealed, err := sl.Seal(key, data)
		return string(sealed), err
	}
	return string(data), nil
}

func encode(obj api.Object) ([]byte, error) {
	// Every stored object says what it is in this version's words:
	// decode refuses any other apiVersion, so none may be stored.
	tm := obj.GetTypeMeta()
	if tm.APIVersion == "" {
		tm.APIVersion = api.APIVersion
	}
	if tm.APIVersion != api.APIVersion {
		return nil, api.NewBadRequest("apiVersion %q is not served here (want %q)", tm.APIVersion, api.APIVersion)
	}
	m := obj.GetMetadata()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	data, err := json.Marshal(obj)
	m.ResourceVersion = rv
	return data, err
}

// decode reads a stored object (opening it if it is sealed) and sets its
// resourceVersion.
//
// It reads strictly. During a rolling upgrade, or after a downgrade, etcd
// may hold objects written by a newer Hearth: another apiVersion, or
// fields this server does not know. Decoding those leniently would drop
// what it does not know, and the next write of the object would erase it
// for good; so such an object is refused, with what is unknown and what
// to do, and stays as it is in etcd until a server that knows it writes
// it. An object with no apiVersion is this version's (every one stored
// so far has one).
func (s *Store) decode(k *api.KindInfo, key, value []byte, modRev int64) (api.Object, error) {
	value, err := s.open(k, key, value)
	if err != nil {
		return nil, err
	}
	obj := k.New()
	if err := decodeStrict(value, obj); err != nil {
		// Read again for the field's path (api.DecodeInto names it).
		if perr := api.DecodeInto(value, k.New()); perr != nil {
			err = perr
		}
		return nil, newerObject(k, key, err.Error())
	}
	if v := obj.GetTypeMeta().APIVersion; v != api.APIVersion {
		return nil, newerObject(k, key, fmt.Sprintf("apiVersion %q", v))
	}
	obj.GetMetadata().ResourceVersion = strconv.FormatInt(modRev, 10)
	return obj, nil
}

// decodeStrict reads a stored object refusing fields it does not know.
// api.DecodeExact takes what that read would read the same way, faster.
func decodeStrict(value []byte, obj api.Object) error {
	if api.DecodeExact(value, obj) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	return dec.Decode(obj)
}

// newerObject is the error for a stored object this server cannot read
// without losing part of it.
func newerObject(k *api.KindInfo, key []byte, what string) error {
	name := strings.TrimPrefix(string(key), KindPrefix(k))
	return api.NewInternal("stored %s %s has %s, which this server (API %s) does not know: "+
		"it was written by a newer Hearth, and is left as it is rather than read in part; "+
		"upgrade this server to the version of the others", k.Kind, name, what, api.APIVersion)
}

// storedPrefix is how every object this version stores begins (encode
// writes apiVersion first).
var storedPrefix = []byte(`{"apiVersion":"` + api.APIVersion + `",`)

// ParseRV parses a resourceVersion; "" is 0.
func ParseRV(rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n < 0 {
		return 0, api.NewBadRequest("resourceVersion %q is not a revision number", rv)
	}
	return n, nil
}

// Get reads one object.
func (s *Store) Get(ctx context.Context, k *api.KindInfo, tenant, name string) (api.Object, error) {
	resp, err := s.kv.Get(ctx, Key(k, tenant, name))
	if err != nil {
		return nil, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, api.NewNotFound(k.Kind, tenant, name)
	}
	return s.decode(k, resp.Kvs[0].Key, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// Exists reports whether an object is stored, without reading or
// decoding it: for checks that need only its name to resolve (a
// Network's status alone lists every port on it).
func (s *Store) Exists(ctx context.Context, k *api.KindInfo, tenant, name string) (bool, error) {
	resp, err := s.kv.Get(ctx, Key(k, tenant, name), clientv3.WithCountOnly())
	if err != nil {
		return false, unavailable(err)
	}
	return resp.Count > 0, nil
}

// List reads every object under a prefix (see KindPrefix and
// TenantPrefix) that the selector matches, and the revision the list is
// consistent at, from which a watch continues.
func (s *Store) List(ctx context.Context, k *api.KindInfo, prefix string, sel api.Selector) ([]api.Object, int64, error) {
	return s.ListAt(ctx, k, prefix, sel, 0)
}

// ListAt is List at revision rev (0: the latest). A list of several
// prefixes reads every one at the revision of the first: read each at
// its own, a change between two reads would be in neither the list nor
// a watch from the last one's revision.
func (s *Store) ListAt(ctx context.Context, k *api.KindInfo, prefix string, sel api.Selector, rev int64) ([]api.Object, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.c.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, unavailable(err)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	out := make([]api.Object, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		obj, err := s.decode(k, kv.Key, kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, err
		}
		if sel.Matches(obj.GetMetadata().Labels) {
			out = append(out, obj)
		}
	}
	return out, rev, nil
}

// ListRaw reads objects under prefix as their stored JSON (opened,
// resourceVersion set), for callers that pass them on without looking
// inside: no decode per object. Only objects whose labels sel matches are
// returned; with a selector, just their labels are decoded.
func (s *Store) ListRaw(ctx context.Context, k *api.KindInfo, prefix string, sel api.Selector) ([][]byte, int64, error) {
	resp, err := s.c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, unavailable(err)
	}
	out, err := s.rawItems(k, resp.Kvs, sel)
	return out, resp.Header.Revision, err
}

// ListPage is how many objects ListRawPages reads from etcd at a time
// (a variable for tests).
var ListPage int64 = 500

// ListRawPages reads what ListRaw reads, ListPage objects at a time, all
// at one revision (rev, or with 0 the latest, which the first page
// reads), and gives each page's objects to fn as it comes: a list of ten
// thousand objects is written out as it is read, and never held whole in
// memory, neither as etcd's answer nor as its copy. It returns the
// revision read at.
func (s *Store) ListRawPages(ctx context.Context, k *api.KindInfo, prefix string, sel api.Selector, rev int64, fn func(rev int64, items [][]byte) error) (int64, error) {
	return s.ListStoredPages(ctx, k, prefix, sel, rev, func(rev int64, items []Stored) error {
		raw := make([][]byte, len(items))
		for i, it := range items {
			raw[i] = WithResourceVersion(it.Data, it.Rev)
		}
		return fn(rev, raw)
	})
}

// Stored is an object as stored (opened, when its kind is sealed) and
// the revision it was written at, which its bytes do not hold: Append
// or WriteTo add it as metadata.resourceVersion.
type Stored struct {
	Data []byte
	Rev  int64
}

// WriteTo writes the object with its resourceVersion, as
// WithResourceVersion makes it, without making it first: a list of
// every VM wrote each one twice, once into a copy.
func (st Stored) WriteTo(w io.Writer) (int64, error) {
	const marker = `"metadata":{`
	i := bytes.Index(st.Data, []byte(marker))
	if i < 0 {
		n, err := w.Write(st.Data)
		return int64(n), err
	}
	i += len(marker)
	var buf [48]byte
	rv := append(strconv.AppendInt(append(buf[:0], `"resourceVersion":"`...), st.Rev, 10), '"')
	if st.Data[i] != '}' {
		rv = append(rv, ',')
	}
	var total int64
	for _, part := range [][]byte{st.Data[:i], rv, st.Data[i:]} {
		n, err := w.Write(part)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// ListStoredPages is ListRawPages with each object as stored and its
// revision apart (Stored), for a caller that writes them out.
func (s *Store) ListStoredPages(ctx context.Context, k *api.KindInfo, prefix string, sel api.Selector, rev int64, fn func(rev int64, items []Stored) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(ListPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.c.Get(ctx, key, opts...)
		if err != nil {
			return rev, unavailable(err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		items, err := s.storedItems(k, resp.Kvs, sel)
		if err != nil {
			return rev, err
		}
		if err := fn(rev, items); err != nil {
			return rev, err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// rawItems is ListRaw's work on the keys read.
func (s *Store) rawItems(k *api.KindInfo, kvs []*mvccpb.KeyValue, sel api.Selector) ([][]byte, error) {
	items, err := s.storedItems(k, kvs, sel)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(items))
	for i, it := range items {
		out[i] = WithResourceVersion(it.Data, it.Rev)
	}
	return out, nil
}

// storedItems opens the keys read and keeps those sel matches.
func (s *Store) storedItems(k *api.KindInfo, kvs []*mvccpb.KeyValue, sel api.Selector) ([]Stored, error) {
	out := make([]Stored, 0, len(kvs))
	for _, kv := range kvs {
		plain, err := s.open(k, kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		// Passed on unread, so nothing is dropped; but an object of
		// another apiVersion is refused as decode refuses it (as a raw
		// watch does).
		if !bytes.HasPrefix(plain, storedPrefix) {
			if _, err := s.decode(k, kv.Key, kv.Value, kv.ModRevision); err != nil {
				return nil, err
			}
		}
		if len(sel) > 0 {
			var labels struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(plain, &labels); err != nil {
				return nil, fmt.Errorf("decoding stored %s: %w", k.Kind, err)
			}
			if !sel.Matches(labels.Metadata.Labels) {
				continue
			}
		}
		out = append(out, Stored{plain, kv.ModRevision})
	}
	return out, nil
}

// Create writes a new object. The store sets uid, generation and the
// creation time; a name already taken is AlreadyExists. In a dry run
// (WithDryRun) it writes nothing and the answer has no resourceVersion.
func (s *Store) Create(ctx context.Context, obj api.Object) (api.Object, error) {
	k, key, err := keyOf(obj)
	if err != nil {
		return nil, err
	}
	m := obj.GetMetadata()
	now := s.now().UTC().Truncate(time.Second)
	m.UID = newUID()
	m.Generation = 1
	m.CreationTimestamp = &now
	m.UpdateTimestamp = &now
	m.DeletionTimestamp = nil
	m.ResourceVersion = ""
	for attempt := 0; ; attempt++ {
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
		var ops []clientv3.Op
		for _, h := range s.hooks[k.Kind] {
			c, o, err := h.OnCreate(withAttempt(ctx, attempt), s.kv, obj)
			if err != nil {
				return nil, err
			}
			cmps, ops = append(cmps, c...), append(ops, o...)
		}
		val, err := s.encode(k, key, obj)
		if err != nil {
			return nil, err
		}
		gcmps, gops := guardOps(ctx)
		cmps, ops = append(cmps, gcmps...), append(ops, gops...)
		ops = append(ops, clientv3.OpPut(key, val))
		if IsDryRun(ctx) {
			ops = nil // the comparisons alone: see WithDryRun
		}
		resp, err := s.c.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, unavailable(err)
		}
		if resp.Succeeded {
			if !IsDryRun(ctx) {
				m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
			}
			return obj, nil
		}
		// Either the name is taken, a guard changed, or an allocation
		// raced; only the last is worth another try here.
		if g, err := s.c.Get(ctx, key, clientv3.WithCountOnly()); err == nil && g.Count > 0 {
			return nil, api.NewAlreadyExists(k.Kind, m.Tenant, m.Name)
		}
		if len(gcmps) > 0 {
			restartReadSession(ctx)
			return nil, ErrGuardChanged
		}
		if attempt >= 16 {
			return nil, api.NewUnavailable("could not allocate for %s %q: too much contention", k.Kind, m.Name)
		}
	}
}

// UpdateFunc computes a new object from the stored one. It may change and
// return cur. Returning an error aborts the update; returning ErrUnchanged
// makes Update return the stored object without writing. It may be called
// more than once when a write races, so it must not change its inputs.
type UpdateFunc func(cur api.Object) (api.Object, error)

// ErrUnchanged, returned by an UpdateFunc, skips a write that would change
// nothing, so re-applying the same file costs no etcd write.
var ErrUnchanged = errors.New("unchanged")

// Update reads the object, applies fn and writes the result if nobody
// wrote in between. With a non-zero precondition the stored revision must
// equal it (409 otherwise); with zero, a lost race re-reads and re-applies
// fn. A result with a deletionTimestamp and no finalizers is deleted. In
// a dry run (WithDryRun) it writes nothing and the answer carries the
// resourceVersion it was computed from.
func (s *Store) Update(ctx context.Context, k *api.KindInfo, tenant, name string, precondition int64, fn UpdateFunc) (api.Object, error) {
	key := Key(k, tenant, name)
	for attempt := 0; ; attempt++ {
		resp, serializable, err := s.readForUpdate(ctx, key, precondition, attempt)
		if err != nil {
			return nil, unavailable(err)
		}
		if len(resp.Kvs) == 0 {
			return nil, api.NewNotFound(k.Kind, tenant, name)
		}
		kv := resp.Kvs[0]
		if precondition != 0 && kv.ModRevision != precondition {
			return nil, api.NewConflict(k.Kind, name, precondition, kv.ModRevision)
		}
		w, err := s.prepareUpdate(ctx, k, key, kv.Value, kv.ModRevision, attempt, fn)
		if errors.Is(err, ErrUnchanged) && serializable {
			continue // no write to lose a race: see readForUpdate
		}
		if errors.Is(err, ErrUnchanged) {
			return w.old, nil
		}
		if err != nil {
			return nil, err
		}
		ops := w.ops
		if IsDryRun(ctx) {
			ops = nil // the comparisons alone: see WithDryRun
		}
		txn := s.c.Txn(ctx).If(w.cmps...).Then(ops...)
		tresp, err := txn.Commit()
		if err != nil {
			return nil, unavailable(err)
		}
		if tresp.Succeeded {
			// A dry run answers with the revision it was computed on.
			nm := w.next.GetMetadata()
			nm.ResourceVersion = strconv.FormatInt(kv.ModRevision, 10)
			if !IsDryRun(ctx) {
				nm.ResourceVersion = strconv.FormatInt(tresp.Header.Revision, 10)
			}
			return w.next, nil
		}
		// The object or a guard changed: read again (a changed object
		// fails the precondition there) and apply fn again.
		if attempt >= 16 {
			return nil, api.NewUnavailable("%s %q is changing too fast to update; try again", k.Kind, name)
		}
	}
}

// preparedUpdate is one object's update, ready to commit: the
// comparisons (the object still at the revision fn saw, the guards) and
// the writes.
type preparedUpdate struct {
	old, next api.Object
	cmps      []clientv3.Cmp
	ops       []clientv3.Op
}

// prepareUpdate applies fn to the stored object (value at modRev) and
// builds the transaction that writes the result. ErrUnchanged comes back
// with old set.
func (s *Store) prepareUpdate(ctx context.Context, k *api.KindInfo, key string, value []byte, modRev int64, attempt int, fn UpdateFunc) (preparedUpdate, error) {
	var w preparedUpdate
	cur, err := s.decode(k, []byte(key), value, modRev)
	if err != nil {
		return w, err
	}
	// The object as it was, for hooks and the caller: decoded again from
	// the same bytes, which costs half of api.DeepCopy's encode and
	// decode (every status write of every VM comes here).
	if w.old, err = s.decode(k, []byte(key), value, modRev); err != nil {
		return w, err
	}
	next, err := fn(cur)
	if err != nil {
		return w, err
	}
	w.next = next
	nm := next.GetMetadata()
	// The identity of an object never changes under an update.
	om := w.old.GetMetadata()
	nm.Name, nm.Tenant, nm.UID, nm.CreationTimestamp = om.Name, om.Tenant, om.UID, om.CreationTimestamp
	if om.DeletionTimestamp != nil {
		nm.DeletionTimestamp = om.DeletionTimestamp
	}
	cmps, ops := guardOps(ctx)
	cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", modRev))
	hctx := withAttempt(ctx, attempt)
	if nm.DeletionTimestamp != nil && len(nm.Finalizers) == 0 {
		dcmps, dops, err := s.deleteOps(hctx, k, key, next)
		if err != nil {
			return w, err
		}
		cmps, ops = append(cmps, dcmps...), append(ops, dops...)
	} else {
		for _, h := range s.hooks[k.Kind] {
			if uh, ok := h.(UpdateHooks); ok {
				c, o, err := uh.OnUpdate(hctx, s.kv, w.old, next)
				if err != nil {
					return w, err
				}
				cmps, ops = append(cmps, c...), append(ops, o...)
			}
		}
		now := s.now().UTC().Truncate(time.Second)
		nm.UpdateTimestamp = &now
		val, err := s.encode(k, key, next)
		if err != nil {
			return w, err
		}
		ops = append(ops, clientv3.OpPut(key, val))
	}
	w.cmps, w.ops = cmps, ops
	return w, nil
}

// Delete removes an object, or, while it has finalizers, marks it with a
// deletionTimestamp and leaves it to the finalizers' owners. check, if
// set, may refuse the deletion after seeing the stored object. It returns
// the object as it was deleted or marked.
func (s *Store) Delete(ctx context.Context, k *api.KindInfo, tenant, name string, precondition int64, check func(cur api.Object) error) (obj api.Object, deleted bool, err error) {
	obj, err = s.Update(ctx, k, tenant, name, precondition, func(cur api.Object) (api.Object, error) {
		if check != nil {
			if err := check(cur); err != nil {
				return nil, err
			}
		}
		m := cur.GetMetadata()
		if m.DeletionTimestamp == nil {
			now := s.now().UTC().Truncate(time.Second)
			m.DeletionTimestamp = &now
		}
		return cur, nil
	})
	if err != nil {
		return nil, false, err
	}
	return obj, len(obj.GetMetadata().Finalizers) == 0, nil
}

func (s *Store) deleteOps(ctx context.Context, k *api.KindInfo, key string, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	ops := []clientv3.Op{clientv3.OpDelete(key)}
	var cmps []clientv3.Cmp
	for _, h := range s.hooks[k.Kind] {
		c, o, err := h.OnDelete(ctx, s.kv, obj)
		if err != nil {
			return nil, nil, err
		}
		cmps, ops = append(cmps, c...), append(ops, o...)
	}
	return cmps, ops, nil
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// unavailable turns an etcd failure into a 503 a client may retry;
// cancellations stay what they are.
func unavailable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return api.NewUnavailable("etcd: %v", err)
}
