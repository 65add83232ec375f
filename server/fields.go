package server

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
)

// fieldGetter returns a function that reads the string at a field
// selector's path in objects of kind k straight from the Go struct, or
// nil when the path does not lead through plain struct fields to a
// string. Such a path reads the same as in the object's JSON (a missing
// or nil step reads ""), so a selector like spec.host=h1, which every
// agent's watch carries, costs a few field reads per object and event
// instead of an encode and a decode. Other paths (maps, numbers, values
// with their own JSON encoding) read the JSON.
func fieldGetter(k *api.KindInfo, path []string) func(api.Object) string {
	t := reflect.TypeOf(k.New())
	var steps [][]int
	for _, name := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || ownJSON(t) {
			return nil
		}
		idx, ok := jsonField(t, name)
		if !ok {
			return nil
		}
		steps = append(steps, idx)
		t = t.FieldByIndex(idx).Type
	}
	if t.Kind() != reflect.String || ownJSON(t) {
		return nil
	}
	return func(o api.Object) string {
		v := reflect.ValueOf(o)
		for _, idx := range steps {
			for _, i := range idx {
				for v.Kind() == reflect.Pointer {
					if v.IsNil() {
						return ""
					}
					v = v.Elem()
				}
				v = v.Field(i)
			}
		}
		return v.String()
	}
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// ownJSON reports whether t (or *t) encodes itself.
func ownJSON(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return t.Implements(jsonMarshaler) || p.Implements(jsonMarshaler) || t.Implements(textMarshaler) || p.Implements(textMarshaler)
}

// jsonField finds the field encoding/json writes under name in struct t,
// looking into embedded structs as it does; ok is false when there is
// none, or more than one at the shallowest depth (then encoding/json
// writes neither).
func jsonField(t reflect.Type, name string) (index []int, ok bool) {
	type cand struct{ index []int }
	level := []cand{{nil}}
	for depth := 0; len(level) > 0 && depth < 8; depth++ {
		var found []int
		n := 0
		var next []cand
		for _, c := range level {
			st := t
			if len(c.index) > 0 {
				st = t.FieldByIndex(c.index).Type
				for st.Kind() == reflect.Pointer {
					st = st.Elem()
				}
			}
			for i := range st.NumField() {
				f := st.Field(i)
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				tname, _, _ := strings.Cut(tag, ",")
				idx := append(append([]int(nil), c.index...), i)
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if f.Anonymous && tname == "" && ft.Kind() == reflect.Struct {
					next = append(next, cand{idx})
					continue
				}
				if !f.IsExported() {
					continue
				}
				if tname == "" {
					tname = f.Name
				}
				if tname == name {
					found, n = idx, n+1
				}
			}
		}
		if n == 1 {
			// Embedded pointers would need allocating to be read; the
			// getter treats a nil one as "", as JSON leaves it out.
			return found, true
		}
		if n > 1 {
			return nil, false
		}
		level = next
	}
	return nil, false
}
