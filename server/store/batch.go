package store

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
)

// A batch writes several objects' updates in one etcd transaction: one
// read of them all, one raft entry and one fsync for all, where one
// Update each costs a read, an entry and an fsync apiece. Each update is
// still conditional on its own object alone: the transaction holds one
// nested transaction per update, each comparing its object's revision
// (and its guards) and writing only if they hold, so an object changed
// since it was read fails on its own and the others are written.

// MaxBatch is the most updates one UpdateBatch commits in one
// transaction; a longer batch is committed in several, at once (etcd
// makes one raft entry of them, as of any concurrent writes). etcd
// refuses a transaction of more than 128 operations (its --max-txn-ops),
// and each nested transaction counts as one beside its own operations.
const MaxBatch = 48

// BatchUpdate is one object's update in a batch: what Update takes.
type BatchUpdate struct {
	Tenant, Name string
	// Precondition, if not zero, is the revision the object must be at.
	Precondition int64
	Fn           UpdateFunc
	// Ctx, if set, is this update's own context: the one fn records its
	// guards in (WithGuards) and its hooks run with.
	Ctx context.Context
	// Also, if set, returns writes to make with the update, in its
	// nested transaction (an Event about it; see CreateOps): they are
	// made only if it is.
	Also func(next api.Object) ([]clientv3.Cmp, []clientv3.Op, error)
}

// BatchResult is what one update of a batch came to: what Update
// returns.
type BatchResult struct {
	Obj api.Object
	Err error
}

// UpdateBatch applies several updates of objects of kind k, as Update
// would one by one, in as few etcd transactions as MaxBatch allows. An
// update that fails (its object changed, is gone, or fn refused)
// fails alone: results[i] is what updates[i] came to. An update that lost
// a race to a writer is tried again alone, as Update tries it (with a
// precondition, that is a Conflict). Not for dry runs.
func (s *Store) UpdateBatch(ctx context.Context, k *api.KindInfo, updates []BatchUpdate) []BatchResult {
	results := make([]BatchResult, len(updates))
	var wg sync.WaitGroup
	for start := 0; start < len(updates); start += MaxBatch {
		end := min(start+MaxBatch, len(updates))
		wg.Go(func() { s.updateBatch(ctx, k, updates[start:end], results[start:end]) })
	}
	wg.Wait()
	return results
}

func (s *Store) updateBatch(ctx context.Context, k *api.KindInfo, updates []BatchUpdate, results []BatchResult) {
	keys := make([]string, len(updates))
	gets := make([]clientv3.Op, len(updates))
	for i, u := range updates {
		keys[i] = Key(k, u.Tenant, u.Name)
		gets[i] = clientv3.OpGet(keys[i])
	}
	rresp, err := s.c.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		for i := range results {
			results[i].Err = unavailable(err)
		}
		return
	}
	// Prepare each update against what was read, several at once: an
	// update's checks may read etcd (admission reads the tenant), and
	// one after the other those reads would take longer than the write.
	// Those that fail now are done.
	prepared := make([]preparedUpdate, len(updates))
	ok := make([]bool, len(updates))
	next := make(chan int, len(updates))
	for i := range updates {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(prepareWorkers, len(updates)) {
		wg.Go(func() {
			for i := range next {
				ok[i] = s.prepareBatched(ctx, k, keys[i], updates[i], rresp.Responses[i].GetResponseRange().Kvs, &prepared[i], &results[i])
			}
		})
	}
	wg.Wait()
	var nested []clientv3.Op
	var which []int // nested[j] is updates[which[j]]
	for i := range updates {
		if ok[i] {
			nested = append(nested, clientv3.OpTxn(prepared[i].cmps, prepared[i].ops, nil))
			which = append(which, i)
		}
	}
	if len(nested) == 0 {
		return
	}
	var alone []int // updates to try again one by one
	tresp, err := s.c.Txn(ctx).Then(nested...).Commit()
	switch {
	case err != nil && ctx.Err() != nil:
		for _, i := range which {
			results[i].Err = unavailable(err)
		}
	case err != nil:
		// etcd refused the transaction as a whole: two updates wrote
		// the same key (a guard, an allocation), or it was too large.
		// Nothing was written; each goes alone.
		alone = which
	default:
		for j, i := range which {
			if !tresp.Responses[j].GetResponseTxn().Succeeded {
				alone = append(alone, i)
				continue
			}
			results[i].Obj = prepared[i].next
			prepared[i].next.GetMetadata().ResourceVersion = strconv.FormatInt(tresp.Header.Revision, 10)
		}
	}
	for _, i := range alone {
		u := updates[i]
		uctx := u.Ctx
		if uctx == nil {
			uctx = ctx
		}
		results[i].Obj, results[i].Err = s.updateAlone(uctx, k, u)
	}
}

// prepareWorkers is how many updates of one transaction are prepared at
// once.
const prepareWorkers = 16

// prepareBatched prepares one update of a batch against kvs, what was
// read of its key, into w; false if it is done already (res says how).
func (s *Store) prepareBatched(ctx context.Context, k *api.KindInfo, key string, u BatchUpdate, kvs []*mvccpb.KeyValue, w *preparedUpdate, res *BatchResult) bool {
	uctx := u.Ctx
	if uctx == nil {
		uctx = ctx
	}
	if len(kvs) == 0 {
		res.Err = api.NewNotFound(k.Kind, u.Tenant, u.Name)
		return false
	}
	kv := kvs[0]
	if u.Precondition != 0 && kv.ModRevision != u.Precondition {
		res.Err = api.NewConflict(k.Kind, u.Name, u.Precondition, kv.ModRevision)
		return false
	}
	var err error
	*w, err = s.prepareUpdate(uctx, k, key, kv.Value, kv.ModRevision, 0, u.Fn)
	if errors.Is(err, ErrUnchanged) {
		res.Obj = w.old
		return false
	}
	if err == nil && u.Also != nil {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		if cmps, ops, err = u.Also(w.next); err == nil {
			w.cmps, w.ops = append(w.cmps, cmps...), append(w.ops, ops...)
		}
	}
	if err != nil {
		res.Err = err
		return false
	}
	return true
}

// updateAlone is an update of a batch that could not be committed with
// the others, made as Update makes it; its Also writes go with it.
func (s *Store) updateAlone(ctx context.Context, k *api.KindInfo, u BatchUpdate) (api.Object, error) {
	if u.Also == nil {
		return s.Update(ctx, k, u.Tenant, u.Name, u.Precondition, u.Fn)
	}
	key := Key(k, u.Tenant, u.Name)
	for attempt := 0; ; attempt++ {
		resp, err := s.c.Get(ctx, key)
		if err != nil {
			return nil, unavailable(err)
		}
		if len(resp.Kvs) == 0 {
			return nil, api.NewNotFound(k.Kind, u.Tenant, u.Name)
		}
		kv := resp.Kvs[0]
		if u.Precondition != 0 && kv.ModRevision != u.Precondition {
			return nil, api.NewConflict(k.Kind, u.Name, u.Precondition, kv.ModRevision)
		}
		w, err := s.prepareUpdate(ctx, k, key, kv.Value, kv.ModRevision, attempt, u.Fn)
		if errors.Is(err, ErrUnchanged) {
			return w.old, nil
		}
		if err != nil {
			return nil, err
		}
		cmps, ops, err := u.Also(w.next)
		if err != nil {
			return nil, err
		}
		tresp, err := s.c.Txn(ctx).If(append(w.cmps, cmps...)...).Then(append(w.ops, ops...)...).Commit()
		if err != nil {
			return nil, unavailable(err)
		}
		if tresp.Succeeded {
			w.next.GetMetadata().ResourceVersion = strconv.FormatInt(tresp.Header.Revision, 10)
			return w.next, nil
		}
		if attempt >= 16 {
			return nil, api.NewUnavailable("%s %q is changing too fast to update; try again", k.Kind, u.Name)
		}
	}
}

// CreateOps returns the comparison and the write that create obj, a new
// object of a kind with no allocation hooks (an Event), for a
// transaction that writes something else too. Like Create it sets the
// uid, generation and creation time.
func (s *Store) CreateOps(obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	k, key, err := keyOf(obj)
	if err != nil {
		return nil, nil, err
	}
	if len(s.hooks[k.Kind]) > 0 {
		return nil, nil, api.NewInternal("%s is created with its allocations, through Create only", k.Kind)
	}
	m := obj.GetMetadata()
	now := s.now().UTC().Truncate(time.Second)
	m.UID = newUID()
	m.Generation = 1
	m.CreationTimestamp = &now
	m.UpdateTimestamp = &now
	m.DeletionTimestamp = nil
	m.ResourceVersion = ""
	val, err := s.encode(k, key, obj)
	if err != nil {
		return nil, nil, err
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, []clientv3.Op{clientv3.OpPut(key, val)}, nil
}
