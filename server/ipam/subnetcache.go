package ipam

import (
	"sync"

	api "hearth.dev/hearth/api/v1alpha1"
)

// subnetCache keeps the Subnets a VM's create decoded, by key and the
// revision they were stored at: every create reads all of its tenant's
// subnets (to find the one on each NIC's network), and decoding them
// again for each create was most of the create's CPU with fifty
// networks. A stored revision never changes, so a hit is exact; the
// read itself still comes from etcd in the write's own view.
type subnetCache struct {
	mu    sync.Mutex
	byKey map[string]cachedSubnet
}

type cachedSubnet struct {
	mod int64
	sn  *api.Subnet
}

// subnetCacheMax bounds the cache; past it, it starts again empty
// (subnets deleted long ago are never looked up again).
const subnetCacheMax = 4096

// decode returns the Subnet stored at key at revision mod, decoded from
// data (without its status) or remembered. The Subnet is shared: callers
// only read it.
func (c *subnetCache) decode(key string, mod int64, data []byte) (*api.Subnet, error) {
	if c == nil {
		return decodeSubnet(data)
	}
	c.mu.Lock()
	e, ok := c.byKey[key]
	c.mu.Unlock()
	if ok && e.mod == mod {
		return e.sn, nil
	}
	sn, err := decodeSubnet(data)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.byKey == nil || len(c.byKey) >= subnetCacheMax {
		c.byKey = map[string]cachedSubnet{}
	}
	c.byKey[key] = cachedSubnet{mod, sn}
	c.mu.Unlock()
	return sn, nil
}

func decodeSubnet(data []byte) (*api.Subnet, error) {
	k, _ := api.KindByName("Subnet")
	sn := k.New().(*api.Subnet)
	if err := decodeWithoutStatus(data, sn); err != nil {
		return nil, err
	}
	return sn, nil
}
