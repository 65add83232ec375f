// Package ipam allocates the addresses tenant networks need, as store
// hooks (store.Hooks) that add their keys to the transaction of the object
// that holds them: a VM's NICs get an IP and a MAC when the VM is created
// or its NICs change, a network's router on each host gets an address on
// the network's external network when the network's status lists the
// host, and a FloatingIP gets its address when it is created. Each
// address is an etcd key of its own, created with a comparison that it
// does not exist yet and deleted in the transaction that lets it go, so
// two holders never share one (racing writes: one commits, the other
// reads again) and deleting the holder never leaks one.
//
// The keys, and the holder each records:
//
//	/hearth/ipam/ip/<subnet uid>/<ip>            a VM's NIC
//	/hearth/ipam/mac/<network uid>/<mac>         a VM's NIC
//	/hearth/ipam/ext/<external network uid>/<ip> a FloatingIP, or a network's router on a host
//
// and, per network, the small anchor a VM's create reads instead of the
// Network (netanchor.go):
//
//	/hearth/ipam-net/<tenant>/<name>             the network's uid, and whether it is being deleted
//
// Keys are named by the uid of the object the address is in, so an object
// deleted and made again under its name starts empty. The objects that
// addresses are in cannot be deleted while any is held: their delete
// hooks answer 409 naming the holders, and compare, in the delete's
// transaction, that no key exists under their prefix (an etcd comparison
// over a key range), while an allocation compares that the object it
// allocates in still exists, with the create revision it read. Whichever
// of a racing delete and allocation commits first, the other fails its
// comparison, reads again, and is refused.
//
// Fields that record allocations (a VM's status.interfaces, a network's
// status.vni and its routers' externalAddress, a floating IP's
// status.address) have one writer, these hooks: a status write by anyone
// else keeps them as allocated.
package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// Key prefixes of the allocations.
const (
	IPPrefix       = "/hearth/ipam/ip/"
	MACPrefix      = "/hearth/ipam/mac/"
	ExternalPrefix = "/hearth/ipam/ext/"
)

func ipKey(subnetUID string, a netip.Addr) string { return IPPrefix + subnetUID + "/" + a.String() }
func macKey(networkUID, mac string) string        { return MACPrefix + networkUID + "/" + mac }
func extKey(extUID string, a netip.Addr) string   { return ExternalPrefix + extUID + "/" + a.String() }

// Holder is the value of an allocation key: what holds the address.
type Holder struct {
	Kind   string `json:"kind"`
	Tenant string `json:"tenant,omitempty"`
	Name   string `json:"name"`
	UID    string `json:"uid"`
	// NIC is the index of a VM's NIC in its spec.nics.
	NIC int `json:"nic,omitempty"`
	// Host is the host of a network's router.
	Host string `json:"host,omitempty"`
}

func (h Holder) value() string {
	b, _ := json.Marshal(h)
	return string(b)
}

// String names the holder for people who may see it.
func (h Holder) String() string {
	switch h.Kind {
	case "VirtualMachine":
		return fmt.Sprintf("VM %s (nics[%d])", h.Name, h.NIC)
	case "Network":
		return fmt.Sprintf("the router of network %s/%s on host %s", h.Tenant, h.Name, h.Host)
	case "FloatingIP":
		return fmt.Sprintf("floating IP %s/%s", h.Tenant, h.Name)
	}
	return h.Kind + " " + h.Name
}

func parseHolder(v []byte) Holder {
	var h Holder
	_ = json.Unmarshal(v, &h)
	return h
}

// Install registers the hooks with a store.
func Install(s *store.Store) {
	hints := newIPHints()
	s.SetHooks("VirtualMachine", NICs{hints: hints})
	s.SetHooks("Subnet", Subnets{hints: hints})
	s.SetHooks("Network", Networks{})
	s.SetHooks("ExternalNetwork", ExternalNetworks{})
	s.SetHooks("FloatingIP", FloatingIPs{})
}

// txn collects one transaction's comparisons and writes, one write per
// key: etcd refuses a transaction that writes a key twice, and an address
// one NIC lets go may be the one another takes in the same write.
type txn struct {
	cmps []clientv3.Cmp
	ops  map[string]clientv3.Op
	keys []string
	// released keys are deleted unless taken again; taken keys are
	// written (or kept) by this transaction.
	released, taken map[string]bool
}

func newTxn() *txn {
	return &txn{ops: map[string]clientv3.Op{}, released: map[string]bool{}, taken: map[string]bool{}}
}

func (t *txn) set(key string, op clientv3.Op) {
	if _, ok := t.ops[key]; !ok {
		t.keys = append(t.keys, key)
	}
	t.ops[key] = op
}

// release deletes key, which the writer holds.
func (t *txn) release(key string) {
	if t.taken[key] {
		return
	}
	t.released[key] = true
	t.set(key, clientv3.OpDelete(key))
}

// keep records that the writer goes on holding key (rewriting its value
// when value is not empty).
func (t *txn) keep(key, value string) {
	t.taken[key] = true
	delete(t.released, key)
	if value != "" {
		t.set(key, clientv3.OpPut(key, value))
	} else {
		delete(t.ops, key)
	}
}

// take writes key for a new holder: a key this transaction released is
// simply overwritten; any other must not exist when it commits.
func (t *txn) take(key, value string) {
	if !t.released[key] {
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	}
	t.keep(key, value)
	t.set(key, clientv3.OpPut(key, value))
}

// busy reports whether this transaction already took key.
func (t *txn) busy(key string) bool { return t.taken[key] }

func (t *txn) result() ([]clientv3.Cmp, []clientv3.Op) {
	var ops []clientv3.Op
	for _, k := range t.keys {
		if op, ok := t.ops[k]; ok {
			ops = append(ops, op)
		}
	}
	return t.cmps, ops
}

// exists compares that the object at key is still the one read (created
// at rev), so an allocation in it cannot commit after it was deleted.
func (t *txn) exists(key string, rev int64) {
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", rev))
}

// getObject reads one object of kind from etcd, with the revision it was
// created at; nil if there is none.
func getObject(ctx context.Context, kv clientv3.KV, kind, tenant, name string) (api.Object, int64, error) {
	k, err := api.KindByName(kind)
	if err != nil {
		return nil, 0, err
	}
	resp, err := kv.Get(ctx, store.Key(k, tenant, name))
	if err != nil {
		return nil, 0, api.NewUnavailable("etcd: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	obj := k.New()
	if err := json.Unmarshal(resp.Kvs[0].Value, obj); err != nil {
		return nil, 0, fmt.Errorf("decoding stored %s %s: %w", kind, name, err)
	}
	return obj, resp.Kvs[0].CreateRevision, nil
}

// decodeWithoutStatus decodes a stored object's metadata and spec, and
// skips its status: for the Networks and Subnets a VM's NICs name, whose
// status the allocation never reads and a Network's lists every port on
// it (decoding it made a VM's create cost O(VMs on its network)).
// obj is empty, as its kind's New makes it.
func decodeWithoutStatus(data []byte, obj api.Object) error {
	doc := struct {
		Metadata *api.ObjectMeta `json:"metadata"`
		Spec     any             `json:"spec"`
	}{obj.GetMetadata(), obj.SpecAny()}
	return json.Unmarshal(data, &doc)
}

func objectKey(kind, tenant, name string) string {
	k, _ := api.KindByName(kind)
	return store.Key(k, tenant, name)
}

// heldUnder returns the last path element of every key under prefix.
func heldUnder(ctx context.Context, kv clientv3.KV, prefix string) (map[string]bool, error) {
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, api.NewUnavailable("etcd: %v", err)
	}
	held := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		held[strings.TrimPrefix(string(kv.Key), prefix)] = true
	}
	return held, nil
}

// holderOf reads who holds key; ok is false if nobody does.
func holderOf(ctx context.Context, kv clientv3.KV, key string) (Holder, bool, error) {
	resp, err := kv.Get(ctx, key)
	if err != nil {
		return Holder{}, false, api.NewUnavailable("etcd: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return Holder{}, false, nil
	}
	return parseHolder(resp.Kvs[0].Value), true, nil
}

// refuseInUse is the delete hook of an object addresses are allocated
// in: a 409 naming the holders (what names to give is the caller's
// choice: holders must be ones its readers may see), else the comparison
// that none appeared since.
func refuseInUse(ctx context.Context, kv clientv3.KV, prefix string, refuse func(holders []Holder) error) ([]clientv3.Cmp, error) {
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, api.NewUnavailable("etcd: %v", err)
	}
	if len(resp.Kvs) > 0 {
		holders := make([]Holder, len(resp.Kvs))
		for i, kv := range resp.Kvs {
			holders[i] = parseHolder(kv.Value)
		}
		return nil, refuse(holders)
	}
	// Holds for every key of the range, so for none when it is empty.
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(prefix), "=", 0).WithPrefix()}, nil
}

// listNames joins names for a message, at most ten of them.
func listNames(names []string) string {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

// pickFree picks a free address between first and last. The first try of
// a write takes the lowest; a retry (another writer took that one) picks
// at random among the lowest few free ones, so racing writers spread out
// instead of colliding again.
func pickFree(first, last netip.Addr, taken func(netip.Addr) bool, attempt int) (netip.Addr, bool) {
	want := 1
	if attempt > 0 {
		want = min(16*attempt, 256)
	}
	var free []netip.Addr
	for a := first; a.IsValid() && !last.Less(a) && len(free) < want; a = a.Next() {
		if !taken(a) {
			free = append(free, a)
		}
	}
	if len(free) == 0 {
		return netip.Addr{}, false
	}
	return free[rand.IntN(len(free))], true
}

// sortedHolders sorts holders for a stable message.
func sortedHolders(hs []Holder) []Holder {
	sort.Slice(hs, func(i, j int) bool { return hs[i].String() < hs[j].String() })
	return hs
}
