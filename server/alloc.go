package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/ipam"
	"hearth.dev/hearth/server/store"
)

// installHooks registers the allocations objects hold: VNIs here, and
// addresses (package ipam).
func installHooks(s *store.Store) {
	s.SetHooks("Network", &vniAllocator{prefix: "/hearth/alloc/vni/", min: 4096, max: 1<<24 - 1})
	ipam.Install(s)
}

// vniAllocator gives every Network its own VXLAN network identifier. The
// VNI is a key of its own, written in the network's create transaction
// and deleted in its delete transaction: two networks can never share one
// and deleting a network always frees it.
type vniAllocator struct {
	prefix   string
	min, max int
}

func (a *vniAllocator) key(vni int) string { return fmt.Sprintf("%s%08d", a.prefix, vni) }

func (a *vniAllocator) OnCreate(ctx context.Context, kv clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	resp, err := kv.Get(ctx, a.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, nil, api.NewUnavailable("etcd: %v", err)
	}
	// Keys come sorted, and zero-padding makes that numeric order: the
	// first gap is the lowest free VNI.
	vni := a.min
	for _, k := range resp.Kvs {
		n, err := strconv.Atoi(strings.TrimPrefix(string(k.Key), a.prefix))
		if err != nil || n < vni {
			continue
		}
		if n > vni {
			break
		}
		vni++
	}
	if vni > a.max {
		return nil, nil, api.NewUnavailable("no free VXLAN network identifiers left")
	}
	net := obj.(*api.Network)
	net.Status.VNI = vni
	m := obj.GetMetadata()
	owner := m.Tenant + "/" + m.Name
	key := a.key(vni)
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, []clientv3.Op{clientv3.OpPut(key, owner)}, nil
}

func (a *vniAllocator) OnDelete(_ context.Context, _ clientv3.KV, obj api.Object) ([]clientv3.Cmp, []clientv3.Op, error) {
	if vni := obj.(*api.Network).Status.VNI; vni != 0 {
		return nil, []clientv3.Op{clientv3.OpDelete(a.key(vni))}, nil
	}
	return nil, nil, nil
}
