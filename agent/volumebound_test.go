package agent

import (
	"strings"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestMarkBound: once a volume that waited for a host is placed, its
// Bound condition is True and says what its host does with it: a pool
// volume's names the pool, not a local file; a volume bound at once gets
// no Bound condition.
func TestMarkBound(t *testing.T) {
	waiting := api.Condition{Type: api.ConditionBound, Status: api.ConditionFalse, Reason: api.ReasonWaiting,
		Message: "waiting for a VM that uses it to be placed: a local volume is made on the host of its VM"}
	for _, tc := range []struct {
		name    string
		pool    string
		waited  bool
		want    []string // in the message; nil: no condition
		notWant string
	}{
		{name: "local", waited: true, want: []string{"placed on host h2", "holds its file"}, notWant: "pool"},
		{name: "pool", pool: "ceph", waited: true, want: []string{"in pool ceph", "placed on host h2", "makes, grows and reports it"}, notWant: "file"},
		{name: "bound at once", pool: "ceph"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := &api.Volume{Metadata: api.ObjectMeta{Name: "data", Tenant: "lab", Generation: 3},
				Spec: api.VolumeSpec{Host: "h2", Pool: tc.pool}}
			if tc.waited {
				vol.Status.SetCondition(waiting, time.Now())
			}
			markBound(vol, &vol.Status.CommonStatus, time.Now())
			c := vol.Status.Condition(api.ConditionBound)
			if tc.want == nil {
				if c != nil {
					t.Errorf("Bound %+v, want none", c)
				}
				return
			}
			if c == nil || c.Status != api.ConditionTrue || c.Reason != api.ReasonBound || c.ObservedGeneration != 3 {
				t.Fatalf("Bound %+v, want True, reason %s, generation 3", c, api.ReasonBound)
			}
			for _, w := range tc.want {
				if !strings.Contains(c.Message, w) {
					t.Errorf("Bound message %q, want it to say %q", c.Message, w)
				}
			}
			if strings.Contains(c.Message, tc.notWant) {
				t.Errorf("Bound message %q says %q", c.Message, tc.notWant)
			}
		})
	}
}
