package store

import (
	"bytes"
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

// TestStoredWriteTo holds Stored.WriteTo to what WithResourceVersion
// makes, byte for byte.
func TestStoredWriteTo(t *testing.T) {
	n := &api.Network{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Network"},
		Metadata: api.ObjectMeta{Name: "n1", Tenant: "lab", Labels: map[string]string{"a": "b"}}}
	stored, err := encode(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range []string{string(stored), `{"metadata":{}}`, `{"kind":"X"}`} {
		var b bytes.Buffer
		n, err := Stored{Data: []byte(data), Rev: 1234567}.WriteTo(&b)
		want := WithResourceVersion([]byte(data), 1234567)
		if err != nil || b.String() != string(want) || n != int64(len(want)) {
			t.Errorf("WriteTo(%s) = %s (%d bytes, %v), want %s", data, b.String(), n, err, want)
		}
	}
}
