package v1alpha1

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

// The fuzz targets below are what an authenticated but hostile client
// reaches with a request body or query: every object decoder and its
// validation, label selectors and sizes. Run one with
// `go test ./api/v1alpha1 -run '^$' -fuzz FuzzDecode -fuzztime 30s`; under
// plain `go test` each runs its seed corpus.

// FuzzDecode: any bytes decoded strictly into any kind either fail with an
// error or give an object that validation can look at without panicking,
// that the slow path (with field paths) also accepts, and that encodes
// and decodes again.
func FuzzDecode(f *testing.F) {
	for _, obj := range Examples() {
		data, _ := json.Marshal(obj)
		f.Add(data)
	}
	for _, s := range []string{
		`{}`, `null`, `[]`, `{"kind":"Machine"}`,
		`{"apiVersion":"hearth.dev/v1alpha1","kind":"Volume","metadata":{"name":"v"},"spec":{"size":"1e30"}}`,
		`{"apiVersion":"hearth.dev/v1alpha1","kind":"Secret","metadata":{"name":"s"},"spec":{"data":{"k":"!!"},"stringData":{"k":"v"}}}`,
		`{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine","metadata":{"name":"x","ownerReferences":[{}]},"spec":{"disks":[{"Image":"a"}]}}`,
		`{"metadata":{"name":"\u0000"},"spec":{"nics":[{"mac":"52:54:00:XX:00:00"}],"memory":-1}}`,
	} {
		f.Add([]byte(s))
	}
	kinds := Kinds()
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Decode(data)
		for _, k := range kinds {
			obj := k.New()
			if DecodeInto(data, obj) != nil {
				continue
			}
			var raw any
			if err := json.Unmarshal(data, &raw); err != nil {
				t.Fatalf("%s: decoded from invalid JSON %q", k.Kind, data)
			}
			if es := unknownFields("", raw, reflect.TypeOf(obj)); len(es) > 0 {
				t.Fatalf("%s: the one-pass decode accepted %q, which has unknown fields %v", k.Kind, data, es)
			}
			// As the server does: the URL says the kind.
			obj.GetTypeMeta().Kind = k.Kind
			_ = Prepare(obj, nil)
			_ = Prepare(DeepCopy(obj), obj)
			again, err := json.Marshal(obj)
			if err != nil {
				t.Fatalf("%s: a decoded object does not encode: %v", k.Kind, err)
			}
			if err := DecodeInto(again, k.New()); err != nil {
				t.Fatalf("%s: %s decoded, but its encoding %s does not: %v", k.Kind, data, again, err)
			}
		}
	})
}

// FuzzParseSelector: any label query either fails or gives a selector
// that matches without panicking, and a term that parses names a key.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "app=web", "app=web,tier!=db", "env in (prod,staging),canary,!legacy",
		"a==b", "x notin (a,,b)", "in (a)", "(", ")", ",,", "!", "a=(b,c)"} {
		f.Add(s)
	}
	labels := []map[string]string{nil, {"app": "web"}, {"env": "prod", "canary": ""}, {"": ""}}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		for _, l := range labels {
			_ = sel.Matches(l)
		}
	})
}

// FuzzParseBytes: a size that parses is never negative (a negative size
// would count against nothing in a quota), and its written form parses
// back to it; the JSON decoder agrees.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "512Mi", "1.5G", "4Gi", "8Ei", "9223372036854775807", "1e30", "NaN", "Inf", "-0", "0x10", " 1 Ki", "1e-9Gi"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBytes(s)
		if err == nil {
			if b < 0 {
				t.Fatalf("ParseBytes(%q) = %d, a negative size", s, int64(b))
			}
			back, err := ParseBytes(b.String())
			if err != nil || back != b {
				t.Fatalf("ParseBytes(%q) = %d, written %q, which parses to %d, %v", s, int64(b), b.String(), int64(back), err)
			}
		}
		var j Bytes
		data, _ := json.Marshal(s)
		if j.UnmarshalJSON(data) == nil && j < 0 {
			t.Fatalf("the JSON size %s decodes to %d, a negative size", data, int64(j))
		}
		if n, err := json.Marshal(json.Number(s)); err == nil && json.Valid(n) {
			if j.UnmarshalJSON(n) == nil && (j < 0 || float64(j) > math.MaxInt64) {
				t.Fatalf("the JSON number %s decodes to %d", n, int64(j))
			}
		}
	})
}
