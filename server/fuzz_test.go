package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// Fuzz targets for what an authenticated but hostile client sends the
// API: object bodies (JSON or YAML), merge patches, and list and watch
// selectors. Under plain `go test` each runs its seed corpus; run one for
// longer with `go test ./server -run '^$' -fuzz FuzzReadObject -fuzztime 30s`.

// FuzzReadObject: any body for any kind's URL is refused with an API
// error or read as an object of that kind in that tenant, which
// validation then looks at without panicking.
func FuzzReadObject(f *testing.F) {
	for _, obj := range api.Examples() {
		data, _ := json.Marshal(obj)
		f.Add(data, false, uint8(0))
	}
	f.Add([]byte("apiVersion: hearth.dev/v1alpha1\nkind: Network\nmetadata: {name: n}\nspec: {}\n"), true, uint8(3))
	f.Add([]byte("a: &a [*a, *a]\n"), true, uint8(1))
	f.Add([]byte(`{"metadata":{"name":"x","tenant":"other"},"spec":{"size":"1e300"}}`), false, uint8(5))
	kinds := api.Kinds()
	f.Fuzz(func(t *testing.T, body []byte, yaml bool, kind uint8) {
		k := kinds[int(kind)%len(kinds)]
		tg := target{kind: k, name: "x"}
		if k.Scope != api.ClusterScoped {
			tg.tenant = "lab"
		}
		r, _ := http.NewRequest(http.MethodPut, "https://hearth/", bytes.NewReader(body))
		if yaml {
			r.Header.Set("Content-Type", "application/yaml")
		}
		obj, err := readObject(r, tg)
		if err != nil {
			if _, ok := err.(*api.Status); !ok {
				t.Fatalf("readObject answered %T %v, not an API Status", err, err)
			}
			return
		}
		m := obj.GetMetadata()
		if obj.GetTypeMeta().Kind != k.Kind || m.Name != "x" || m.Tenant != tg.tenant {
			t.Fatalf("read %s %s/%s for a %s URL of x in %q", obj.GetTypeMeta().Kind, m.Tenant, m.Name, k.Kind, tg.tenant)
		}
		_ = api.Prepare(obj, nil)
	})
}

// FuzzMergePatch: applying a merge patch never panics, and applying it a
// second time changes nothing (RFC 7386 patches are idempotent).
func FuzzMergePatch(f *testing.F) {
	f.Add([]byte(`{"spec":{"cidr":"10.0.0.0/24","dns":["1.1.1.1"]},"metadata":{"labels":{"a":"b"}}}`), []byte(`{"metadata":{"labels":{"a":null,"c":"d"}}}`))
	f.Add([]byte(`{"a":[1,2]}`), []byte(`{"a":{"b":null}}`))
	f.Add([]byte(`"x"`), []byte(`{"a":{"b":{"c":null}}}`))
	f.Add([]byte(`{}`), []byte(`[]`))
	f.Fuzz(func(t *testing.T, docJSON, patchJSON []byte) {
		var doc, patch, patch2 any
		if json.Unmarshal(docJSON, &doc) != nil || json.Unmarshal(patchJSON, &patch) != nil {
			return
		}
		_ = json.Unmarshal(patchJSON, &patch2) // mergePatch may share patch's values with its result
		once := mergePatch(doc, patch)
		onceJSON, err := json.Marshal(once)
		if err != nil {
			t.Fatalf("the patched document does not encode: %v", err)
		}
		var again any
		_ = json.Unmarshal(onceJSON, &again)
		twice := mergePatch(again, patch2)
		var want any
		_ = json.Unmarshal(onceJSON, &want)
		if !reflect.DeepEqual(twice, want) {
			t.Fatalf("patch %s on %s: once %s, twice %v", patchJSON, docJSON, onceJSON, twice)
		}
	})
}

// FuzzParseFilter: any label and field selectors are refused with a 400
// or give a filter that matches objects without panicking.
func FuzzParseFilter(f *testing.F) {
	f.Add("app=web", "spec.host=h1")
	f.Add("", "metadata.name!=x,involvedObject.name=web")
	f.Add("env in (a,b),!legacy", "spec.power.password=guess")
	f.Add("", "=,!=,a.b.c.d.e=")
	f.Add("(", "spec..x==y")
	objs := []api.Object{}
	for _, o := range api.Examples() {
		objs = append(objs, o)
	}
	viewer := &auth.Principal{Name: "viewer", Role: api.RoleViewer}
	f.Fuzz(func(t *testing.T, labels, fields string) {
		q := url.Values{"labelSelector": {labels}, "fieldSelector": {fields}}
		r, _ := http.NewRequest(http.MethodGet, "https://hearth/?"+q.Encode(), nil)
		for _, o := range objs {
			k, _ := api.KindByName(o.GetTypeMeta().Kind)
			flt, err := parseFilter(r, k)
			if err != nil {
				if st, ok := err.(*api.Status); !ok || st.Code != http.StatusBadRequest {
					t.Fatalf("parseFilter refused with %v, want a 400", err)
				}
				return
			}
			_ = flt.labels.Matches(o.GetMetadata().Labels)
			_ = flt.fields(shown(viewer, o))
		}
	})
}
