package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The fast decoders (jsondecode.go) and DeepCopy's plans (deepcopy.go)
// promise the very results of the encoding/json code they replace. These
// tests hold them to it on every example, every manifest under
// examples/, the fuzz corpus and a table of awkward documents, and
// FuzzDecodeAgrees on whatever the fuzzer makes.

// decodeCorpus is every document the agreement tests try.
func decodeCorpus(t testing.TB) [][]byte {
	var docs [][]byte
	add := func(v any) {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, data)
	}
	for _, obj := range Examples() {
		add(obj)
	}
	add(benchVM())
	add(benchNetwork())
	// The manifests users are shown, as the CLI turns them into JSON.
	files, _ := filepath.Glob("../../examples/*.yaml")
	more, _ := filepath.Glob("../../examples/*/*.yaml")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no manifests under examples/")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for doc := range strings.SplitSeq(string(data), "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			js, err := yaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			docs = append(docs, js)
		}
	}
	// The fuzz corpus kept in testdata.
	seeds, _ := filepath.Glob("testdata/fuzz/*/*")
	for _, f := range seeds {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			if lit, ok := strings.CutPrefix(line, "[]byte("); ok {
				if s, err := strconv.Unquote(strings.TrimSuffix(lit, ")")); err == nil {
					docs = append(docs, []byte(s))
				}
			}
		}
	}
	for _, s := range awkwardDocuments() {
		docs = append(docs, []byte(s))
	}
	return docs
}

// awkwardDocuments are the cases where the two decoders could part:
// unknown fields, names in the wrong case, wrong types, duplicate names,
// trailing data, invalid UTF-8, escapes, nulls, numbers, sizes, times,
// base64, and empty against null.
func awkwardDocuments() []string {
	vm := func(spec string) string {
		return `{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine","metadata":{"name":"a","tenant":"lab"},"spec":{` + spec + `}}`
	}
	meta := func(m string) string {
		return `{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine","metadata":{` + m + `},"spec":{"cpus":1}}`
	}
	secret := func(data string) string {
		return `{"apiVersion":"hearth.dev/v1alpha1","kind":"Secret","metadata":{"name":"s"},"spec":{"data":{"k":` + data + `}}}`
	}
	host := func(overcommit string) string {
		return `{"apiVersion":"hearth.dev/v1alpha1","kind":"Host","metadata":{"name":"h"},"spec":{"cpuOvercommit":` + overcommit + `}}`
	}
	ok := vm(`"cpus":2,"memory":"1Gi"`)
	docs := []string{
		ok, " \t\n" + ok + "\n\n", ok + "x", ok + "}", ok + " {}", ok + "]", ok + ok, "\ufeff" + ok,
		// unknown fields, at the top and deep down
		vm(`"cpus":1,"bogus":1`), vm(`"nics":[{"network":"n","x":1}]`), `{"kind":"VirtualMachine","extra":{"a":[1,{"b":2}]}}`,
		vm(`"cpus":1,"cpu":1`), meta(`"name":"a","labels":{"x":"y"},"label":{}`),
		// wrong case
		`{"APIVERSION":"hearth.dev/v1alpha1","Kind":"VirtualMachine"}`, `{"kind":"VirtualMachine","Metadata":{"name":"a"}}`,
		vm(`"CPUs":1`), vm(`"cpus":1,"CPUs":2`), vm(`"CPUs":2,"cpus":1`), meta(`"NAME":"a"`), vm(`"nics":[{"Network":"n"}]`),
		// wrong types
		vm(`"cpus":"two"`), meta(`"name":5`), meta(`"name":"a","labels":[1]`), meta(`"name":"a","labels":{"a":1}`),
		vm(`"cpus":true`), vm(`"cpus":{}`), vm(`"nics":{}`), vm(`"nics":[1]`), `{"kind":"VirtualMachine","spec":[]}`,
		`{"kind":5}`, `{"kind":"VirtualMachine","metadata":"x"}`,
		// duplicate names
		meta(`"name":"a","name":"b"`), vm(`"cpus":1,"cpus":2`), vm(`"cpus":1},"spec":{"memory":"1Gi"`),
		meta(`"name":"a","labels":{"x":"1","x":"2"}`), meta(`"name":"a","labels":{"x":"1"},"labels":{"y":"2"}`),
		vm(`"nics":[{"network":"a"}],"nics":[{"subnet":"b"},{}]`), vm(`"nics":[{"network":"a"},{"network":"b"}],"nics":[{"subnet":"c"}]`),
		vm(`"nics":[{"network":"a","securityGroups":["x","y"]}],"nics":[{"securityGroups":["z"]}]`), vm(`"nics":[{}],"nics":null`),
		vm(`"memory":"1Gi","memory":2048`), vm(`"memory":"1Gi","memory":null`), vm(`"memory":"1Gi","memory":"x"`),
		meta(`"name":"a","labels":{"a":"b"},"labels":null`), meta(`"name":"a","labels":null,"labels":{"a":"b"}`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00Z","creationTimestamp":null`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00Z","creationTimestamp":"2026-12-07T20:00:00+01:00"`),
		meta(`"name":"a","ownerReferences":[{"kind":"Tenant","name":"t","uid":"u"}],"ownerReferences":[{"name":"s"}]`),
		`{"kind":"VirtualMachine","status":{"phase":"a","conditions":[{"type":"x","reason":"r"}],"phase":"b","conditions":[{"message":"m"}]}}`,
		`{"kind":"VirtualMachine","status":{"startedAt":"2026-12-06T20:00:00Z"},"status":{"phase":"Running"}}`,
		`{"kind":"MachineProfile","spec":{"variants":{"a":{"args":"k","url":"u"},"a":{"ipxeScript":"i"}}}}`,
		`{"kind":"MachineProfile","spec":{"variants":{"a":{"args":"k"}},"variants":{"b":{"url":"i"},"a":{"url":"v"}}}}`,
		secret(`"aGVsbG8=","k":"d29ybGQ="`), secret(`"aGVsbG8=","k":null`), `{"kind":"Secret","spec":{"data":{"a":"eA=="},"data":{"b":"eQ=="}}}`,
		`{"kind":"VirtualMachine","kind":"Network","apiVersion":"x","apiVersion":"hearth.dev/v1alpha1"}`,
		// invalid UTF-8 and escapes
		meta("\"name\":\"a\xff\""), meta("\"name\":\"a\",\"labels\":{\"k\xfe\":\"v\"}"), "{\"kind\":\"VirtualMachine\",\"meta\xffdata\":{}}",
		meta(`"name":"\u00e9\ud800x"`), meta(`"name":"\ud83d\ude00"`), meta(`"n\u0061me":"a"`), meta(`"name":"\u003cb\u003e\/"`),
		meta(`"name":"a\u0000b"`), meta("\"name\":\"tab\there\""),
		// nulls
		`null`, `{"kind":"VirtualMachine","spec":null}`, `{"kind":null,"apiVersion":null}`, meta(`"name":"a","labels":null`),
		vm(`"memory":null`), meta(`"name":"a","creationTimestamp":null`), vm(`"nics":[null]`), vm(`"nics":null`),
		vm(`"cpus":null`), `{"kind":"VirtualMachine","status":{"conditions":[null,{"type":"Ready"}]}}`,
		// numbers
		vm(`"cpus":1e2`), vm(`"cpus":1.0`), vm(`"cpus":-0`), vm(`"cpus":1.5`), vm(`"cpus":99999999999999999999`),
		vm(`"cpus":-1`), vm(`"cpus":9223372036854775807`), vm(`"cpus":01`), vm(`"cpus":+1`), vm(`"cpus":1E+2`),
		host(`1e400`), host(`1e-400`), host(`-0`), host(`-0.0`), host(`1.7976931348623157e308`), host(`4.9e-324`),
		host(`0.1`), host(`"1.5"`), host(`1.`), host(`.5`), host(`1e`), host(`123456789012345678901234567890`),
		// sizes (Bytes)
		vm(`"memory":1e3`), vm(`"memory":"1gi"`), vm(`"memory":"1G"`), vm(`"memory":" 1Gi"`), vm(`"memory":1024`),
		vm(`"memory":"1024"`), vm(`"memory":"\u0031Gi"`), vm(`"memory":-5`), vm(`"memory":0`), vm(`"memory":"0"`),
		vm(`"memory":"-1Gi"`), vm(`"memory":"8Ei"`), vm(`"memory":9223372036854775807`), vm(`"memory":9223372036854775808`),
		vm(`"memory":"1.5Gi"`), vm(`"memory":true`), vm(`"memory":[]`), vm(`"memory":""`), vm(`"memory":1.0`), vm(`"memory":00`),
		// times
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00Z"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00.123456789+02:00"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00+00:00"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00-00:00"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06t20:00:00z"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06 20:00:00Z"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T24:00:00Z"`),
		meta(`"name":"a","creationTimestamp":"0000-01-01T00:00:00Z"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00.Z"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00,5Z"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00+0200"`),
		meta(`"name":"a","creationTimestamp":"2026-12-06T20:00:00+24:00"`),
		meta(`"name":"a","creationTimestamp":1`), meta(`"name":"a","creationTimestamp":""`),
		// base64
		secret(`"aGVsbG8="`), secret(`"aGVsbG8"`), secret(`"aGVs\nbG8="`), secret(`"aGVs\r\nbG8="`), secret(`"-_-_"`),
		secret(`"+/+/"`), secret(`""`), secret(`null`), secret(`"!!"`), secret(`5`), secret(`"aGVsbG8=="`), secret(`" aGVsbG8="`),
		// empty against null against missing
		meta(`"name":"a","finalizers":[]`), meta(`"name":"a","finalizers":null`), meta(`"name":"a","labels":{}`),
		vm(`"nics":[]`), vm(`"nics":[{}]`), vm(`"nics":[{"securityGroups":[]}]`), vm(`"nics":[{"securityGroups":null}]`),
		// not objects
		``, `{`, `{}`, `[]`, `"x"`, `5`, `true`, `{"kind":"VirtualMachine"`, `{"kind":"VirtualMachine",}`, `{"kind" "x"}`,
	}
	return docs
}

// decodeTargets are the kinds, and TypeMeta which Decode reads first.
func decodeTargets() []func() any {
	out := []func() any{func() any { return &TypeMeta{} }}
	for _, k := range Kinds() {
		out = append(out, func() any { return k.New() })
	}
	return out
}

// checkDecodeAgrees decodes data into each target with the fast path and
// with encoding/json, and fails on any difference in result or error.
func checkDecodeAgrees(t *testing.T, data []byte) {
	t.Helper()
	for _, newT := range decodeTargets() {
		name := fmt.Sprintf("%T", newT())
		// Strictly, as a request body is read.
		a, b := newT(), newT()
		errA, errB := DecodeInto(data, a), decodeIntoV1(data, b)
		if !reflect.DeepEqual(errA, errB) {
			t.Fatalf("%s: DecodeInto(%q) gave error %v, encoding/json %v", name, data, errA, errB)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: DecodeInto(%q) gave\n%#v\nencoding/json\n%#v", name, data, a, b)
		}
		// Leniently, as the watch feed and clients read.
		a, b = newT(), newT()
		errA, errB = Unmarshal(data, a), json.Unmarshal(data, b)
		if fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Fatalf("%s: Unmarshal(%q) gave error %v, encoding/json %v", name, data, errA, errB)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: Unmarshal(%q) gave\n%#v\nencoding/json\n%#v", name, data, a, b)
		}
		if o, ok := b.(Object); ok && errB == nil {
			checkCopyAgrees(t, o)
		}
		// Strictly refusing unknown fields, as the store reads.
		a, b = newT(), newT()
		if DecodeExact(data, a) {
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(b); err != nil {
				t.Fatalf("%s: DecodeExact took %q, which encoding/json refuses: %v", name, data, err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s: DecodeExact(%q) gave\n%#v\nencoding/json\n%#v", name, data, a, b)
			}
		} else if !reflect.DeepEqual(a, newT()) {
			t.Fatalf("%s: DecodeExact refused %q but changed the object: %#v", name, data, a)
		}
	}
}

// checkCopyAgrees compares DeepCopy with the JSON round trip, panics
// included.
func checkCopyAgrees(t *testing.T, obj Object) {
	t.Helper()
	try := func(copy func(Object) Object) (out Object, panicked any) {
		defer func() { panicked = recover() }()
		return copy(obj), nil
	}
	got, gotPanic := try(DeepCopy)
	want, wantPanic := try(deepCopyJSON)
	if fmt.Sprint(gotPanic) != fmt.Sprint(wantPanic) || !reflect.DeepEqual(got, want) {
		js, _ := json.Marshal(obj)
		t.Fatalf("DeepCopy of %s gave\n%#v (panic %v)\nthe JSON round trip\n%#v (panic %v)", js, got, gotPanic, want, wantPanic)
	}
}

func TestDecodeAgrees(t *testing.T) {
	for _, data := range decodeCorpus(t) {
		checkDecodeAgrees(t, data)
	}
	// The fast ways are taken where they should be, so the comparisons
	// above compare something.
	for kind, obj := range Examples() {
		data, _ := json.Marshal(obj)
		k, _ := KindByName(kind)
		if !DecodeExact(data, k.New()) || !UnmarshalFast(data, k.New()) {
			t.Errorf("%s: the example does not take the fast decoders", kind)
		}
		if p := planOf(reflect.TypeOf(obj).Elem()); p == nil {
			t.Errorf("%s: DeepCopy has no plan for it", kind)
		}
	}
}

// TestDecodeErrorsUnchanged: the errors users see name the field as they
// always did (and so as encoding/json does, which TestDecodeAgrees
// checks); a few spelt out so a change shows here first.
func TestDecodeErrorsUnchanged(t *testing.T) {
	vm := func(spec string) string {
		return `{"apiVersion":"hearth.dev/v1alpha1","kind":"VirtualMachine","metadata":{"name":"a"},"spec":{` + spec + `}}`
	}
	cases := []struct{ name, doc, want string }{
		{"unknown field", vm(`"cpus":1,"cpuz":2`), "spec.cpuz: unknown field (did you mean \"cpus\"?)"},
		{"wrong case", vm(`"CPUs":1`), "spec.CPUs: unknown field (did you mean \"cpus\"?)"},
		{"wrong type", vm(`"cpus":"two"`), "spec.cpus: string is not an integer"},
		{"bad size", vm(`"memory":"lots"`), "spec.memory: "},
		{"trailing garbage", vm(`"cpus":1`) + "}", ": not valid JSON: invalid character '}' after top-level value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := DecodeInto([]byte(tc.doc), &VirtualMachine{})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error starting %q", err, tc.want)
			}
		})
	}
	// A duplicate name is no error: the last one wins, as before.
	var vmObj VirtualMachine
	if err := DecodeInto([]byte(vm(`"cpus":1,"cpus":3`)), &vmObj); err != nil || vmObj.Spec.CPUs != 3 {
		t.Fatalf("got %v and %d CPUs, want no error and 3", err, vmObj.Spec.CPUs)
	}
}

// TestDeepCopyAgrees compares DeepCopy with the JSON round trip on
// objects of every kind filled at random: nil, empty and full slices and
// maps, strings with invalid UTF-8, times in several locations with
// monotonic readings, sizes, floats.
func TestDeepCopyAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(16, 6))
	for _, k := range Kinds() {
		for range 200 {
			obj := k.New()
			fillRandom(r, reflect.ValueOf(obj).Elem(), 0)
			obj.GetTypeMeta().Kind = k.Kind
			checkCopyAgrees(t, obj)
		}
	}
	for _, obj := range Examples() {
		checkCopyAgrees(t, obj)
	}
	checkCopyAgrees(t, benchVM())
	checkCopyAgrees(t, benchNetwork())
	// Map keys that invalid UTF-8 makes one take the round trip.
	h := Examples()["Host"].(*Host)
	h.Metadata.Labels = map[string]string{"a\xff": "1", "a\xfe": "2"}
	checkCopyAgrees(t, h)
	// A value JSON cannot encode panics, as it always did.
	for _, bad := range []func(*Host){
		func(h *Host) { h.Spec.CPUOvercommit = math.NaN() },
		func(h *Host) { h.Spec.ReservedMemory = -1 << 30 },
		func(h *Host) { y := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC); h.Status.LastHeartbeat = &y },
	} {
		h := Examples()["Host"].(*Host)
		bad(h)
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("DeepCopy of %+v did not panic", h)
				}
			}()
			DeepCopy(h)
		}()
	}
}

var randomStrings = []string{"", "a", "web-1", "é", "a\xffb", "\xfe\xff", "<&>", "\u2028", "x\x00y"}

var randomLocations = []*time.Location{time.UTC, time.Local, time.FixedZone("", 2*3600), time.FixedZone("CET", 3600), time.FixedZone("", 0)}

// fillRandom sets v to something random of its type.
func fillRandom(r *rand.Rand, v reflect.Value, depth int) {
	switch v.Type() {
	case timeType:
		t := time.Now()
		if r.IntN(2) == 0 {
			t = time.Unix(r.Int64N(1<<34), r.Int64N(1e9))
		}
		v.Set(reflect.ValueOf(t.In(randomLocations[r.IntN(len(randomLocations))])))
		return
	case bytesType:
		v.SetInt([]int64{0, 1, 1 << 30, 3 << 20, 1<<62 + 1, math.MaxInt64, r.Int64()}[r.IntN(7)])
		return
	}
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt([]int64{0, 1, -1, 42}[r.IntN(4)])
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(r.IntN(300)) % (1 << min(v.Type().Bits(), 16)))
	case reflect.Float32, reflect.Float64:
		v.SetFloat([]float64{0, math.Copysign(0, -1), 1.5, 1e-300, 1e300, 3.0000000000000004}[r.IntN(6)])
	case reflect.String:
		v.SetString(randomStrings[r.IntN(len(randomStrings))])
	case reflect.Pointer:
		if depth < 6 && r.IntN(3) != 0 {
			p := reflect.New(v.Type().Elem())
			fillRandom(r, p.Elem(), depth+1)
			v.Set(p)
		}
	case reflect.Slice:
		switch n := r.IntN(4); {
		case n == 0 || depth >= 6:
			// nil
		default:
			s := reflect.MakeSlice(v.Type(), n-1, n-1)
			for i := range n - 1 {
				fillRandom(r, s.Index(i), depth+1)
			}
			v.Set(s)
		}
	case reflect.Map:
		switch n := r.IntN(4); {
		case n == 0 || depth >= 6:
		default:
			m := reflect.MakeMap(v.Type())
			for range n - 1 {
				k := reflect.New(v.Type().Key()).Elem()
				k.SetString([]string{"", "a", "b", "é"}[r.IntN(4)])
				e := reflect.New(v.Type().Elem()).Elem()
				fillRandom(r, e, depth+1)
				m.SetMapIndex(k, e)
			}
			v.Set(m)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillRandom(r, v.Field(i), depth+1)
			}
		}
	}
}

// FuzzDecodeAgrees: on any bytes, the fast decoders and DeepCopy agree
// with the encoding/json code they replace (see checkDecodeAgrees). Run
// it with `go test ./api/v1alpha1 -run '^$' -fuzz FuzzDecodeAgrees
// -fuzztime 60s`.
func FuzzDecodeAgrees(f *testing.F) {
	for _, data := range decodeCorpus(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeAgrees(t, data)
	})
}
