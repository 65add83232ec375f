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
