package v1alpha1

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestDecodeFastAgreesWithSlow: every example decodes through the one-pass
// path to exactly what it was, and keys that only differ in case from a
// field are still refused, wherever they are.
func TestDecodeFastAgreesWithSlow(t *testing.T) {
	for kind, obj := range Examples() {
		obj.GetMetadata().Labels = map[string]string{"Name": "label-that-looks-like-a-field", "app": "web"}
		data, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if !reflect.DeepEqual(got, obj) {
			t.Errorf("%s: decoded object differs:\n got %+v\nwant %+v", kind, got, obj)
		}
	}
	for _, doc := range []string{
		`{"apiVersion":"hearth.dev/v1alpha1","kind":"Subnet","metadata":{"name":"a"},"spec":{"CIDR":"10.0.0.0/24","network":"n"}}`,
		`{"apiVersion":"hearth.dev/v1alpha1","kind":"Subnet","metadata":{"Name":"a"},"spec":{"cidr":"10.0.0.0/24","network":"n"}}`,
	} {
		if _, err := Decode([]byte(doc)); err == nil {
			t.Errorf("a key differing from its field only in case was accepted: %s", doc)
		}
	}
}

func TestScanKeys(t *testing.T) {
	var got []string
	scanKeys([]byte(`{"a": 1, "b\"c" :{"d":"e:f", "g":[ "h", {"i" : null}]}}`), func(k []byte) { got = append(got, string(k)) })
	want := []string{"a", `b\"c`, "d", "g", "i"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestDecodeBadBase64: a Secret value that is not base64 is refused with
// its field path.
func TestDecodeBadBase64(t *testing.T) {
	_, err := Decode([]byte(`{"apiVersion":"hearth.dev/v1alpha1","kind":"Secret","metadata":{"name":"s"},"spec":{"data":{"password":"not base64!"}}}`))
	es, ok := err.(FieldErrors)
	if !ok || len(es) != 1 || es[0].Field != "spec.data.password" || !strings.Contains(es[0].Detail, "is not base64") {
		t.Fatalf("got %v, want one error at spec.data.password saying it is not base64", err)
	}
}
