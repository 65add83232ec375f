package store

import (
	"encoding/json"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

func TestWithResourceVersion(t *testing.T) {
	n := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
		Metadata: api.ObjectMeta{Name: "n1", Tenant: "lab", Labels: map[string]string{"a": "b"}}}
	stored, err := encode(n)
	if err != nil {
		t.Fatal(err)
	}
	out := WithResourceVersion([]byte(stored), 42)
	var got api.Network
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("spliced JSON does not decode: %v\n%s", err, out)
	}
	if got.Metadata.ResourceVersion != "42" || got.Metadata.Name != "n1" || got.Metadata.Labels["a"] != "b" {
		t.Fatalf("got metadata %+v, want resourceVersion 42 and the rest unchanged", got.Metadata)
	}
	empty := WithResourceVersion([]byte(`{"metadata":{}}`), 7)
	if string(empty) != `{"metadata":{"resourceVersion":"7"}}` {
		t.Fatalf("empty metadata: got %s", empty)
	}
}
