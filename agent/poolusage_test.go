package agent_test

import (
	"fmt"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// TestPoolUsage: the agent writes the size, use and free space of the
// shared pools it uses (a volume of it is made there), as Ceph and the
// NFS server report them, into the pools' status.
func TestPoolUsage(t *testing.T) {
	needQEMU(t)
	l := newLab(t)
	for i, p := range []sharedPool{rbdPool(t, l), nfsPool(t, l)} {
		name := p.pool.Metadata.Name
		vol := volume(fmt.Sprintf("v%d", i), 16<<20, api.VolumeSource{})
		vol.Spec.Pool = name // made by h1, the volume's host
		l.create(t, vol)
		var st api.StoragePoolStatus
		servertest.Eventually(t, time.Minute, func() error {
			o, err := l.env.Admin.Get(servertest.Ctx(t), "StoragePool", "", name)
			if err != nil {
				return err
			}
			st = o.(*api.StoragePool).Status
			if st.Capacity <= 0 || st.Available <= 0 || st.Available > st.Capacity || st.Used > st.Capacity {
				return fmt.Errorf("pool %s: capacity %d, used %d, available %d", name, st.Capacity, st.Used, st.Available)
			}
			return nil
		})
		c, err := p.driver.Capacity(servertest.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		// What the test reads itself, give or take a hundredth.
		if d := int64(st.Capacity) - c.Total; d > c.Total/100 || -d > c.Total/100 {
			t.Errorf("pool %s: status.capacity %d, the storage says %d", name, st.Capacity, c.Total)
		}
		t.Logf("pool %s (%s): %s of %s used, %s available", name, p.pool.Spec.Driver, st.Used, st.Capacity, st.Available)
	}
}
