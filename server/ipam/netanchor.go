package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// AnchorPrefix holds one small key per Network, written by the Network's
// own hooks in the transactions that create it, mark it for deletion and
// delete it:
//
//	/hearth/ipam-net/<tenant>/<name>   {"uid": …, "deleting": true?}
//
// It is all a VM's create needs of the network its NIC names (that it
// exists, is not being deleted, and its uid, which names its MAC keys),
// so the create reads it and not the Network, whose status lists every
// port on it: reading and decoding that made every create cost O(VMs on
// the network). The create compares in its transaction that the anchor's
// mod revision is still the one read, so a network deleted or marked for
// deletion meanwhile fails it (the write reads again and is refused),
// while the status writes of the networks controller, which do not touch
// the anchor, never make a create retry.
//
// A network stored before anchors were written has none until its next
// update writes one; until then a create reads the Network as before.
const AnchorPrefix = "/hearth/ipam-net/"

func anchorKey(tenant, name string) string { return AnchorPrefix + tenant + "/" + name }

// anchor is the value of an anchor key.
type anchor struct {
	UID      string `json:"uid"`
	Deleting bool   `json:"deleting,omitempty"`
}

func anchorOf(n *api.Network) string {
	b, _ := json.Marshal(anchor{UID: n.Metadata.UID, Deleting: n.Metadata.DeletionTimestamp != nil})
	return string(b)
}

// anchorOps writes n's anchor if the stored one (read here) is missing or
// says otherwise; nothing in the common case, a status write.
func anchorOps(ctx context.Context, kv clientv3.KV, n *api.Network) ([]clientv3.Op, error) {
	key, want := anchorKey(n.Metadata.Tenant, n.Metadata.Name), anchorOf(n)
	resp, err := kv.Get(ctx, key)
	if err != nil {
		return nil, api.NewUnavailable("etcd: %v", err)
	}
	if len(resp.Kvs) > 0 && string(resp.Kvs[0].Value) == want {
		return nil, nil
	}
	return []clientv3.Op{clientv3.OpPut(key, want)}, nil
}

// readNetwork reads what a VM's NICs need of a network: from its anchor,
// or, for a network without one yet, from the Network itself (without
// its status). exists is the comparison that it is still so when the
// write commits. nil if there is no such network.
func readNetwork(ctx context.Context, kv clientv3.KV, tenant, name string) (*found[*api.Network], error) {
	key := anchorKey(tenant, name)
	resp, err := kv.Get(ctx, key)
	if err != nil {
		return nil, api.NewUnavailable("etcd: %v", err)
	}
	if len(resp.Kvs) > 0 {
		var a anchor
		if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil || a.UID == "" {
			return nil, fmt.Errorf("decoding the anchor of network %s: %q", name, resp.Kvs[0].Value)
		}
		n := &api.Network{Metadata: api.ObjectMeta{Name: name, Tenant: tenant, UID: a.UID}}
		if a.Deleting {
			// Only whether it is set is ever read.
			n.Metadata.DeletionTimestamp = &time.Time{}
		}
		rev := resp.Kvs[0].ModRevision
		return &found[*api.Network]{obj: n, rev: rev, cmp: clientv3.Compare(clientv3.ModRevision(key), "=", rev)}, nil
	}
	k, _ := api.KindByName("Network")
	key = store.Key(k, tenant, name)
	if resp, err = kv.Get(ctx, key); err != nil {
		return nil, api.NewUnavailable("etcd: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	n := k.New().(*api.Network)
	if err := decodeWithoutStatus(resp.Kvs[0].Value, n); err != nil {
		return nil, fmt.Errorf("decoding stored Network %s: %w", name, err)
	}
	rev := resp.Kvs[0].CreateRevision
	return &found[*api.Network]{obj: n, rev: rev, cmp: clientv3.Compare(clientv3.CreateRevision(key), "=", rev)}, nil
}
