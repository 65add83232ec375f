package openapi

import (
	"encoding"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// schemaPrefix is where components.schemas entries are referenced from.
const schemaPrefix = "#/components/schemas/"

// bytesPattern matches what api.ParseBytes accepts as a string: a number
// (possibly with a fraction) and an optional decimal or binary unit.
const bytesPattern = `^[0-9]+(\.[0-9]+)?([KMGTPE]i?|k)?$`

var (
	timeType          = reflect.TypeFor[time.Time]()
	bytesType         = reflect.TypeFor[api.Bytes]()
	rawMessageType    = reflect.TypeFor[json.RawMessage]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// schemas collects components.schemas. Named struct types get one entry
// each, referenced with $ref wherever they appear; everything else is
// written inline, the way encoding/json would encode it.
type schemas struct {
	defs map[string]any
	// names maps the struct types that have (or are getting) an entry to
	// the entry's name, so a type shared by many kinds is written once and
	// a type that refers to itself does not recurse forever.
	names map[reflect.Type]string
}

func newSchemas() *schemas {
	return &schemas{defs: map[string]any{}, names: map[reflect.Type]string{}}
}

func ref(name string) map[string]any {
	return map[string]any{"$ref": schemaPrefix + name}
}

// claim reserves a name before its schema is written. Two schemas wanting
// the same fixed name (a kind called FooList beside Foo's list, say) is a
// bug in this package or in the API types, not something to paper over.
func (s *schemas) claim(name string) {
	if _, dup := s.defs[name]; dup {
		panic(fmt.Sprintf("openapi: two schemas named %q", name))
	}
	s.defs[name] = nil
}

// define adds a schema under a fixed name.
func (s *schemas) define(name string, schema map[string]any) {
	s.claim(name)
	s.defs[name] = schema
}

// claimType reserves name for struct type t, so every use of t refers to
// it. Kinds are aliases of a generic Resource type, so they are claimed
// under the kind's name before anything refers to them.
func (s *schemas) claimType(name string, t reflect.Type) {
	s.claim(name)
	s.names[t] = name
}

// name returns the name of struct type t's schema, writing it if need be.
func (s *schemas) name(t reflect.Type) string {
	s.of(t)
	return s.names[t]
}

// of returns the schema of a value of type t as encoding/json writes it, or
// nil for types encoding/json cannot write (funcs, channels, complex).
func (s *schemas) of(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == bytesType:
		return map[string]any{
			"type":        "string",
			"pattern":     bytesPattern,
			"description": `A size in bytes: a number with an optional unit, binary (Ki, Mi, Gi, Ti, Pi, Ei) or decimal (K, M, G, T, P, E), such as "512Mi" or "20Gi". A plain JSON number of bytes is accepted too.`,
			"example":     "4Gi",
		}
	case t == rawMessageType:
		return map[string]any{}
	case implements(t, jsonMarshalerType):
		// Its own encoding, unknown to reflection: allow any value.
		return map[string]any{}
	case implements(t, textMarshalerType):
		return map[string]any{"type": "string"}
	}
	switch t.Kind() {
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint8, reflect.Uint16:
		return map[string]any{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float32:
		return map[string]any{"type": "number", "format": "float"}
	case reflect.Float64:
		return map[string]any{"type": "number", "format": "double"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 && !implements(t.Elem(), jsonMarshalerType) && !implements(t.Elem(), textMarshalerType) {
			return map[string]any{"type": "string", "format": "byte"} // encoding/json writes []byte as base64
		}
		items := s.of(t.Elem())
		if items == nil {
			return nil
		}
		return map[string]any{"type": "array", "items": items}
	case reflect.Map:
		values := s.of(t.Elem())
		if values == nil {
			return nil
		}
		return map[string]any{"type": "object", "additionalProperties": values}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		if t.Name() == "" {
			return s.structSchema(t)
		}
		if name, ok := s.names[t]; ok {
			return ref(name)
		}
		name := s.uniqueName(t)
		s.claimType(name, t) // before recursing, for types that refer to themselves
		schema := s.structSchema(t)
		if d := docOf(t, ""); d != "" {
			schema["description"] = d
		}
		s.defs[name] = schema
		return ref(name)
	}
	return nil
}

func implements(t, iface reflect.Type) bool {
	return t.Implements(iface) || reflect.PointerTo(t).Implements(iface)
}

var notSchemaName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// uniqueName names a struct type's schema after the type. A name already
// taken by another type gets the package's name in front, so the API's
// types keep their plain names and a stranger is the one qualified.
func (s *schemas) uniqueName(t reflect.Type) string {
	name := t.Name()
	if i := strings.IndexByte(name, '['); i >= 0 {
		// An instance of a generic type: Pair[pkg.A,pkg.B] becomes Pair_A_B.
		args := strings.Split(name[i+1:len(name)-1], ",")
		name = name[:i]
		for _, a := range args {
			name += "_" + a[strings.LastIndexAny(a, "./")+1:]
		}
	}
	name = notSchemaName.ReplaceAllString(name, "_")
	if _, taken := s.defs[name]; !taken {
		return name
	}
	pkg := t.PkgPath()
	pkg = notSchemaName.ReplaceAllString(pkg[strings.LastIndexByte(pkg, '/')+1:], "_")
	qualified := pkg + "." + name
	for i := 2; ; i++ {
		if _, taken := s.defs[qualified]; !taken {
			return qualified
		}
		qualified = fmt.Sprintf("%s.%s%d", pkg, name, i)
	}
}

// structSchema writes a struct as an object whose properties are its JSON
// fields.
func (s *schemas) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	s.addFields(t, props, map[string]int{}, 0)
	return map[string]any{"type": "object", "properties": props}
}

// addFields adds t's JSON fields to props. Embedded structs without a JSON
// name (`json:",inline"` or no tag) are flattened into their parent, as
// encoding/json does. depths records how deep each property was found: as
// in encoding/json, a shallower field hides a deeper one of the same name.
// (encoding/json drops both of two same-depth, untagged rivals; the API
// types have none, so the first simply wins here.)
func (s *schemas) addFields(t reflect.Type, props map[string]any, depths map[string]int, depth int) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			s.addFields(ft, props, depths, depth+1)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if d, seen := depths[name]; seen && d <= depth {
			continue
		}
		schema := s.of(f.Type)
		if schema == nil {
			continue
		}
		if hasOption(opts, "string") {
			switch ft.Kind() {
			case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
				reflect.Float32, reflect.Float64:
				schema = map[string]any{"type": "string"}
			}
		}
		if d := docOf(t, f.Name); d != "" {
			schema = described(schema, d)
		}
		// `openapi:"writeOnly,deprecated"` on a field says what reflection
		// cannot see: a field the server takes but never shows (a
		// Secret's stringData), or one kept only for old objects.
		for _, o := range strings.Split(f.Tag.Get("openapi"), ",") {
			if o == "writeOnly" || o == "deprecated" {
				schema = maps.Clone(schema)
				schema[o] = true
			}
		}
		props[name] = schema
		depths[name] = depth
	}
}

// apiPackage is the package whose doc comments describe the schemas.
var apiPackage = reflect.TypeFor[api.ObjectMeta]().PkgPath()

// docOf is the doc comment of field of struct type t (of t itself for
// ""), as written in the API's Go source (api.FieldDoc); none for types
// of other packages.
func docOf(t reflect.Type, field string) string {
	if t.PkgPath() != apiPackage {
		return ""
	}
	name, _, _ := strings.Cut(t.Name(), "[") // a generic type's instances share its comments
	return api.FieldDoc(name, field)
}

// described returns schema with a description. A $ref takes no siblings
// in OpenAPI 3.0, so a described reference is wrapped in allOf.
func described(schema map[string]any, description string) map[string]any {
	if _, isRef := schema["$ref"]; isRef {
		return map[string]any{"allOf": []any{schema}, "description": description}
	}
	out := maps.Clone(schema)
	out["description"] = description
	return out
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}
