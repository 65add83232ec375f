package ipam

import (
	"encoding/json"
	"reflect"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestDecodeWithoutStatus: a stored Network decodes to the same metadata
// and spec as a whole decode gives, with its status (every port) left
// out.
func TestDecodeWithoutStatus(t *testing.T) {
	k, _ := api.KindByName("Network")
	in := k.New().(*api.Network)
	in.Metadata = api.ObjectMeta{Name: "lan", Tenant: "lab", UID: "u1", Labels: map[string]string{"a": "b"}, ResourceVersion: "7"}
	in.Spec.MTU = 1400
	in.Status.VNI = 4097
	in.Status.Hosts = []string{"h1", "h2"}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	whole := k.New().(*api.Network)
	if err := json.Unmarshal(data, whole); err != nil {
		t.Fatal(err)
	}
	got := k.New().(*api.Network)
	if err := decodeWithoutStatus(data, got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Metadata, whole.Metadata) || !reflect.DeepEqual(got.Spec, whole.Spec) || got.TypeMeta != whole.TypeMeta {
		t.Fatalf("got %+v, want the metadata and spec of %+v", got, whole)
	}
	if !reflect.DeepEqual(got.Status, api.NetworkStatus{}) {
		t.Fatalf("the status was decoded: %+v", got.Status)
	}
}

// TestSubnetCache: a subnet stored at the same revision is decoded once;
// a new revision of it is decoded again, so a hit never serves an old
// version.
func TestSubnetCache(t *testing.T) {
	k, _ := api.KindByName("Subnet")
	stored := func(cidr string) []byte {
		sn := k.New().(*api.Subnet)
		sn.Metadata = api.ObjectMeta{Name: "s", Tenant: "lab", UID: "u1"}
		sn.Spec.Network, sn.Spec.CIDR = "lan", cidr
		data, err := json.Marshal(sn)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	var c subnetCache
	a, err := c.decode("/k", 5, stored("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.decode("/k", 5, stored("10.0.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("the same revision was decoded twice")
	}
	n, err := c.decode("/k", 9, stored("10.1.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if n.Spec.CIDR != "10.1.0.0/24" {
		t.Fatalf("a new revision gave %s, want 10.1.0.0/24", n.Spec.CIDR)
	}
}
