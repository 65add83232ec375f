package server

import (
	"encoding/json"
	"sort"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestFieldGetterMatchesJSON: for every kind's example object, every path
// in its JSON that fieldGetter reads without encoding reads what the
// object's JSON holds there, and paths the JSON lacks read "" both ways.
func TestFieldGetterMatchesJSON(t *testing.T) {
	checked := 0
	for _, o := range api.Examples() {
		k, err := api.KindByName(o.GetTypeMeta().Kind)
		if err != nil {
			t.Fatal(err)
		}
		// Fill what agents and controllers select on, so those paths are
		// not only ever compared empty.
		if vm, ok := o.(*api.VirtualMachine); ok {
			vm.Spec.Host = "h1"
		}
		data, _ := json.Marshal(o)
		var doc any
		_ = json.Unmarshal(data, &doc)
		var paths [][]string
		leaves(doc, nil, &paths)
		// Paths that are not in this object's JSON, or lead past a leaf.
		paths = append(paths, []string{"spec", "nosuch"}, []string{"metadata", "name", "deeper"}, []string{"status", "phase"})
		for _, p := range paths {
			get := fieldGetter(k, p)
			if get == nil {
				continue
			}
			if got, want := get(o), jsonPath(doc, p); got != want {
				t.Errorf("%s %v: getter reads %q, JSON holds %q", k.Kind, p, got, want)
			}
			checked++
		}
		// Every kind's name, and a VM's host, take the fast path.
		if fieldGetter(k, []string{"metadata", "name"}) == nil {
			t.Errorf("%s: metadata.name is read through JSON", k.Kind)
		}
	}
	vk, _ := api.KindByName("VirtualMachine")
	if fieldGetter(vk, []string{"spec", "host"}) == nil {
		t.Error("VirtualMachine spec.host is read through JSON: every agent's watch pays for it")
	}
	if checked < 50 {
		t.Fatalf("only %d paths checked", checked)
	}
}

// leaves collects the path of every value in doc that is not an object.
func leaves(doc any, path []string, out *[][]string) {
	m, ok := doc.(map[string]any)
	if !ok {
		*out = append(*out, append([]string(nil), path...))
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		leaves(m[k], append(path, k), out)
	}
}
