package v1alpha1

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Decode reads one object from JSON. It reads the kind first, then decodes
// strictly into that kind, so a misspelt field is an error with its path
// (`spec.cdir: unknown field`) rather than silently ignored.
func Decode(data []byte) (Object, error) {
	var tm TypeMeta
	if err := Unmarshal(data, &tm); err != nil {
		return nil, FieldErrors{{Field: "", Detail: "not a JSON object: " + err.Error()}}
	}
	var es FieldErrors
	if tm.APIVersion != APIVersion {
		es.Add("apiVersion", "%q is not supported (want %q)", tm.APIVersion, APIVersion)
	}
	k, ok := kinds[tm.Kind]
	if !ok {
		if tm.Kind == "" {
			es.Add("kind", "is required")
		} else {
			es.Add("kind", "%q is not a Hearth kind", tm.Kind)
		}
		return nil, es
	}
	obj := k.New()
	if err := DecodeInto(data, obj); err != nil {
		return nil, err
	}
	return obj, es.Err()
}

// DecodeInto decodes JSON strictly into obj: unknown fields and type
// mismatches are FieldErrors with their paths.
func DecodeInto(data []byte, obj any) error {
	if DecodeExact(data, obj) {
		return nil
	}
	return decodeIntoV1(data, obj)
}

// decodeIntoV1 is DecodeInto with encoding/json alone: what DecodeExact
// does not take, and what the tests hold DecodeInto to.
func decodeIntoV1(data []byte, obj any) error {
	if decodeFast(data, obj) {
		return nil
	}
	var raw any
	if err := json.Unmarshal(data, &raw); err != nil {
		return FieldErrors{{Field: "", Detail: "not valid JSON: " + err.Error()}}
	}
	es := unknownFields("", raw, reflect.TypeOf(obj))
	if len(es) > 0 {
		return es
	}
	if err := json.Unmarshal(data, obj); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return FieldErrors{{Field: te.Field, Detail: fmt.Sprintf("%s is not %s", te.Value, jsonTypeName(te.Type))}}
		}
		// Errors from a field's own UnmarshalJSON (a bad size, say) do not
		// carry a path in encoding/json; report them as they are.
		return FieldErrors{{Field: "", Detail: err.Error()}}
	}
	return nil
}

// decodeFast decodes strictly in one pass when that is certain to agree
// with the exact path below. encoding/json refuses unknown keys but
// matches field names without regard to case, so the one pass is trusted
// only if every key in the document is either a field name exactly or
// like no field name in any case. Otherwise (or on any error) obj is
// reset and the caller takes the slow path, which reports paths.
func decodeFast(data []byte, obj any) bool {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	names := fieldNames(v.Type())
	ok := true
	scanKeys(data, func(key []byte) {
		if canonical, found := names[strings.ToLower(string(key))]; found && canonical != string(key) {
			ok = false
		}
	})
	if ok {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		// Nothing but space may follow the object: dec.More would not
		// notice a stray '}' or ']'.
		if dec.Decode(obj) == nil && len(bytes.TrimSpace(data[dec.InputOffset():])) == 0 {
			return true
		}
	}
	// Start the slow path from a clean object, keeping what New set.
	keep := keepTypeMeta(obj)
	v.Elem().Set(reflect.Zero(v.Elem().Type()))
	keep()
	return false
}

// keepTypeMeta remembers an object's apiVersion and kind, which its
// constructor set, so they survive zeroing it; it returns the restorer.
func keepTypeMeta(obj any) func() {
	o, ok := obj.(Object)
	if !ok {
		return func() {}
	}
	tm := *o.GetTypeMeta()
	return func() { *o.GetTypeMeta() = tm }
}

// fieldNames maps the lowercase form of every JSON field name reachable
// from t to the name itself. Computed once per type.
func fieldNames(t reflect.Type) map[string]string {
	if n, ok := nameCache.Load(t); ok {
		return n.(map[string]string)
	}
	out := map[string]string{}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for name, ft := range jsonFields(t) {
			out[strings.ToLower(name)] = name
			walk(ft)
		}
	}
	walk(t)
	nameCache.Store(t, out)
	return out
}

var nameCache sync.Map // reflect.Type → map[string]string

// scanKeys calls fn with every object key in a JSON document (escapes are
// left as they are: such a key never equals a field name, and only
// matters through the slow path). It does not validate the document.
func scanKeys(data []byte, fn func([]byte)) {
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		start := i + 1
		for i++; i < len(data) && data[i] != '"'; i++ {
			if data[i] == '\\' {
				i++
			}
		}
		if i >= len(data) {
			return
		}
		end := i
		j := i + 1
		for j < len(data) && (data[j] == ' ' || data[j] == '\t' || data[j] == '\n' || data[j] == '\r') {
			j++
		}
		if j < len(data) && data[j] == ':' {
			fn(data[start:end])
		}
	}
}

func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.String()
}

// unknownFields walks decoded JSON beside the Go type it is meant for and
// reports keys the type has no field for.
func unknownFields(path string, v any, t reflect.Type) FieldErrors {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// Types that decode themselves (a Bytes size, a time) are tried here,
	// because encoding/json drops the path from their errors.
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		data, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(data)
		}
		if err != nil {
			return FieldErrors{{Field: path, Detail: err.Error()}}
		}
		return nil
	}
	var es FieldErrors
	switch val := v.(type) {
	case string:
		// encoding/json reports bad base64 without the field's path.
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			if _, err := base64.StdEncoding.DecodeString(val); err != nil {
				es = append(es, FieldError{Field: path, Detail: "is not base64 (give plain text in stringData instead)"})
			}
		}
	case map[string]any:
		switch t.Kind() {
		case reflect.Map:
			// In key order, so the same document gives the same errors.
			for _, k := range slices.Sorted(maps.Keys(val)) {
				es = append(es, unknownFields(join(path, k), val[k], t.Elem())...)
			}
		case reflect.Struct:
			fields := jsonFields(t)
			keys := make([]string, 0, len(val))
			for k := range val {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				f, ok := fields[k]
				if !ok {
					es = append(es, FieldError{Field: join(path, k), Detail: "unknown field" + suggest(k, fields)})
					continue
				}
				es = append(es, unknownFields(join(path, k), val[k], f)...)
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, x := range val {
				es = append(es, unknownFields(fmt.Sprintf("%s[%d]", path, i), x, t.Elem())...)
			}
		}
	}
	return es
}

var unmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// jsonFields maps JSON names to field types, following embedded structs.
// It is computed once per type: every request body goes through it.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	f := computeJSONFields(t)
	fieldCache.Store(t, f)
	return f
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

func computeJSONFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range computeJSONFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// suggest names the known field closest to a misspelt one.
func suggest(k string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for name := range fields {
		if d := editDistance(strings.ToLower(k), strings.ToLower(name)); d < bestD || (d == bestD && name < best && best != "") {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Prepare defaults and validates an object as a create or an update would:
// metadata per the kind's scope, then the spec's own rules. old is the
// stored object on an update, nil on a create.
func Prepare(obj, old Object) FieldErrors {
	k, ok := kinds[obj.GetTypeMeta().Kind]
	if !ok {
		return FieldErrors{{Field: "kind", Detail: fmt.Sprintf("%q is not a Hearth kind", obj.GetTypeMeta().Kind)}}
	}
	var es FieldErrors
	if obj.GetTypeMeta().APIVersion != APIVersion {
		es.Add("apiVersion", "%q is not supported (want %q)", obj.GetTypeMeta().APIVersion, APIVersion)
	}
	m := obj.GetMetadata()
	es = append(es, ValidateName("metadata.name", m.Name)...)
	switch k.Scope {
	case ClusterScoped:
		if m.Tenant != "" {
			es.Add("metadata.tenant", "%s is cluster-scoped and takes no tenant", k.Kind)
		}
	case TenantScoped:
		if m.Tenant == "" {
			es.Add("metadata.tenant", "is required for %s", k.Kind)
		} else {
			es = append(es, ValidateName("metadata.tenant", m.Tenant)...)
		}
	case TenantOptional:
		if m.Tenant != "" {
			es = append(es, ValidateName("metadata.tenant", m.Tenant)...)
		}
	}
	es = append(es, ValidateLabels("metadata.labels", m.Labels)...)
	for i, o := range m.OwnerReferences {
		p := fmt.Sprintf("metadata.ownerReferences[%d]", i)
		if _, ok := kinds[o.Kind]; !ok {
			es.Add(p+".kind", "%q is not a Hearth kind", o.Kind)
		}
		if o.Name == "" {
			es.Add(p+".name", "is required")
		}
		if o.UID == "" {
			es.Add(p+".uid", "is required")
		}
	}
	spec := obj.SpecAny()
	if d, ok := spec.(Defaulter); ok {
		d.Default()
	}
	if v, ok := spec.(Validator); ok {
		es = append(es, v.Validate("spec")...)
	}
	if cv, ok := spec.(CreateValidator); ok && old == nil {
		es = append(es, cv.ValidateCreate("spec")...)
	}
	if old != nil {
		om := old.GetMetadata()
		if m.Tenant != om.Tenant {
			es.Add("metadata.tenant", "cannot change (was %q)", om.Tenant)
		}
		if uv, ok := spec.(UpdateValidator); ok {
			es = append(es, uv.ValidateUpdate("spec", old.SpecAny())...)
		}
	}
	return es
}

// SpecEqual reports whether two objects' specs are the same, by their JSON.
func SpecEqual(a, b Object) bool {
	ja, _ := json.Marshal(a.SpecAny())
	jb, _ := json.Marshal(b.SpecAny())
	return bytes.Equal(ja, jb)
}

// deepCopyJSON is DeepCopy by a JSON round trip, which is what DeepCopy
// means (see deepcopy.go).
func deepCopyJSON(obj Object) Object {
	data, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	out := kinds[obj.GetTypeMeta().Kind].New()
	if err := json.Unmarshal(data, out); err != nil {
		panic(err)
	}
	return out
}
