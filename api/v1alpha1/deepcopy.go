package v1alpha1

import (
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// DeepCopy returns a copy of obj that shares nothing with it.
//
// The copy is what encoding obj as JSON and decoding that into a new
// object of its kind gives, which is what DeepCopy always was; it is made
// without JSON, by a plan per type that does what the round trip does: a
// field encoding/json leaves out (omitempty and empty, "-", unexported)
// keeps the new object's value, an empty slice or map stays empty (nil
// stays nil), strings with invalid UTF-8 get U+FFFD per bad byte, times
// lose their monotonic reading and come back in the location parsing
// gives them. Where a plan cannot be sure (a type it does not know, a map
// key with invalid UTF-8, a value JSON cannot encode) it takes the round
// trip itself, with its panic.
func DeepCopy(obj Object) Object {
	out := kinds[obj.GetTypeMeta().Kind].New()
	src, dst := reflect.ValueOf(obj), reflect.ValueOf(out)
	if src.Type() == dst.Type() && src.Kind() == reflect.Pointer && !src.IsNil() {
		if p := planOf(src.Type().Elem()); p != nil && p(dst.Elem(), src.Elem()) {
			return out
		}
	}
	return deepCopyJSON(obj)
}

// copyPlan sets dst (settable, as a decoder would find it) from src as a
// JSON round trip would; false means it could not be sure, and dst is
// then in no particular state.
type copyPlan func(dst, src reflect.Value) bool

var (
	plans  sync.Map // reflect.Type → copyPlan (nil: no plan), once made
	planMu sync.Mutex
)

// planOf returns t's plan, nil if there is none.
func planOf(t reflect.Type) copyPlan {
	if p, ok := plans.Load(t); ok {
		return p.(copyPlan)
	}
	planMu.Lock()
	defer planMu.Unlock()
	b := planBuilder{cells: map[reflect.Type]*copyPlan{}}
	p := b.plan(t)
	// Published only once made, so no reader sees a plan half built.
	for t, c := range b.cells {
		plans.Store(t, *c)
	}
	return p
}

// planBuilder makes the plans of one type and of the types in it.
type planBuilder struct {
	cells map[reflect.Type]*copyPlan
}

func (b *planBuilder) plan(t reflect.Type) copyPlan {
	if p, ok := plans.Load(t); ok {
		return p.(copyPlan)
	}
	if c, ok := b.cells[t]; ok {
		if *c != nil {
			return *c
		}
		// A type that contains itself: its plan, once made.
		return func(dst, src reflect.Value) bool { return *c != nil && (*c)(dst, src) }
	}
	c := new(copyPlan)
	b.cells[t] = c
	*c = b.makePlan(t)
	return *c
}

var (
	timeType        = reflect.TypeFor[time.Time]()
	bytesType       = reflect.TypeFor[Bytes]()
	marshalerType   = reflect.TypeFor[json.Marshaler]()
	textMarshalType = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (b *planBuilder) makePlan(t reflect.Type) copyPlan {
	switch t {
	case timeType:
		return copyTime
	case bytesType:
		// Bytes encodes as its String and decodes that with ParseBytes,
		// which refuses some (a negative size, one too large for it).
		return func(dst, src reflect.Value) bool {
			b, err := ParseBytes(Bytes(src.Int()).String())
			if err != nil {
				return false
			}
			dst.SetInt(int64(b))
			return true
		}
	}
	// A pointer has the methods of what it points at, which are that
	// type's plan's concern: nil encodes as null either way.
	if pt := reflect.PointerTo(t); t.Kind() != reflect.Pointer {
		for _, m := range []reflect.Type{marshalerType, unmarshalerType, textMarshalType, textUnmarshType} {
			if t.Implements(m) || pt.Implements(m) {
				return nil // its own encoding: only the round trip knows
			}
		}
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return func(dst, src reflect.Value) bool { dst.Set(src); return true }
	case reflect.Float32, reflect.Float64:
		return func(dst, src reflect.Value) bool {
			if f := src.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
				return false
			}
			dst.Set(src)
			return true
		}
	case reflect.String:
		return func(dst, src reflect.Value) bool { dst.SetString(validUTF8(src.String())); return true }
	case reflect.Pointer:
		elem := b.plan(t.Elem())
		if elem == nil {
			return nil
		}
		return func(dst, src reflect.Value) bool {
			if src.IsNil() {
				dst.SetZero()
				return true
			}
			p := reflect.New(t.Elem())
			dst.Set(p)
			return elem(p.Elem(), src.Elem())
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			// Base64 and back: the same bytes; empty stays empty.
			return func(dst, src reflect.Value) bool {
				if src.IsNil() {
					dst.SetZero()
					return true
				}
				dst.SetBytes(append(make([]byte, 0, src.Len()), src.Bytes()...))
				return true
			}
		}
		elem := b.plan(t.Elem())
		if elem == nil {
			return nil
		}
		return func(dst, src reflect.Value) bool {
			if src.IsNil() {
				dst.SetZero()
				return true
			}
			s := reflect.MakeSlice(t, src.Len(), src.Len())
			for i := range src.Len() {
				if !elem(s.Index(i), src.Index(i)) {
					return false
				}
			}
			dst.Set(s)
			return true
		}
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil
		}
		elem := b.plan(t.Elem())
		if elem == nil {
			return nil
		}
		return func(dst, src reflect.Value) bool {
			if src.IsNil() {
				dst.SetZero()
				return true
			}
			m := reflect.MakeMapWithSize(t, src.Len())
			it := src.MapRange()
			for it.Next() {
				k := it.Key()
				if !utf8.ValidString(k.String()) {
					return false // two keys could become one
				}
				v := reflect.New(t.Elem()).Elem()
				if !elem(v, it.Value()) {
					return false
				}
				m.SetMapIndex(k, v)
			}
			dst.Set(m)
			return true
		}
	case reflect.Struct:
		return b.structPlan(t)
	}
	return nil // interfaces, arrays, channels, functions: the round trip
}

// copyTime gives a time as encoding and parsing it as RFC 3339 does.
func copyTime(dst, src reflect.Value) bool {
	t := src.Interface().(time.Time)
	if y := t.Year(); y < 0 || y > 9999 {
		return false // does not encode
	}
	if t.Location() == time.UTC {
		// Parsing "…Z" gives UTC; only the monotonic reading is lost.
		dst.Set(reflect.ValueOf(t.Round(0)))
		return true
	}
	text, err := t.MarshalText()
	if err != nil {
		return false
	}
	var back time.Time
	if back.UnmarshalText(text) != nil {
		return false
	}
	dst.Set(reflect.ValueOf(back))
	return true
}

// validUTF8 is s as encoding/json encodes it: every byte that is not
// part of valid UTF-8 becomes U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// structField is one JSON field of a struct: where it is (through inlined
// embedded structs), whether it is left out when empty, and its plan.
type structField struct {
	index     []int
	omitEmpty bool
	plan      copyPlan
}

// structPlan copies the fields encoding/json encodes. It gives up (nil)
// on what it does not model: an embedded pointer or non-struct without a
// name, tag options other than omitempty, and two fields of one JSON name
// (encoding/json's rules for which wins are not repeated here).
func (b *planBuilder) structPlan(t reflect.Type) copyPlan {
	var fields []structField
	names := map[string]bool{}
	var walk func(t reflect.Type, index []int) bool
	walk = func(t reflect.Type, index []int) bool {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(append([]int(nil), index...), i)
			if f.Anonymous && name == "" {
				if f.Type.Kind() != reflect.Struct {
					return false
				}
				if !walk(f.Type, idx) {
					return false
				}
				continue
			}
			if !f.IsExported() {
				continue
			}
			omit := false
			for o := range strings.SplitSeq(opts, ",") {
				switch o {
				case "", "inline":
				case "omitempty":
					omit = true
				default:
					return false
				}
			}
			if name == "" {
				name = f.Name
			}
			if names[name] {
				return false
			}
			names[name] = true
			p := b.plan(f.Type)
			if p == nil {
				return false
			}
			fields = append(fields, structField{index: idx, omitEmpty: omit, plan: p})
		}
		return true
	}
	if !walk(t, nil) {
		return nil
	}
	return func(dst, src reflect.Value) bool {
		for _, f := range fields {
			s := src.FieldByIndex(f.index)
			if f.omitEmpty && isEmptyValue(s) {
				continue // not encoded: the decoder leaves dst's
			}
			if !f.plan(dst.FieldByIndex(f.index), s) {
				return false
			}
		}
		return true
	}
}

// isEmptyValue is encoding/json's test for omitempty.
func isEmptyValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64,
		reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}
