package controllers

import (
	"reflect"
	"sync"
	"unsafe"

	api "hearth.dev/hearth/api/v1alpha1"
)

// The shared informers hold every object decoded, and a decoded string is
// a copy of its own: 13,000 VMs hold 13,000 copies of their tenant's
// name, of "VirtualMachine" and "hearth.dev/v1alpha1", of "Running",
// "Ready" and "True", a thousand copies of each host's name, and each
// network's status repeats its ports' VM and host names. The informers
// therefore intern the strings of every object they cache (interner):
// equal strings share one copy. Values do not change, only where their
// bytes are.

// internMaxLen is the longest string interned: names, phases, reasons,
// addresses; not messages or documents, which seldom repeat.
const internMaxLen = 64

// internTableSize bounds the table: interned strings of objects long gone
// stay in it until two generations of this many distinct strings have
// passed, so what it keeps alive is bounded (internTableSize × 2 ×
// internMaxLen bytes at most), while a string still in use moves to the
// new generation when next seen.
const internTableSize = 4096

// interner hands out one copy of each equal string.
type interner struct {
	mu        sync.Mutex
	cur, prev map[string]string
}

// object interns every string of obj (its exported fields, through
// structs, pointers, slices and string-valued maps), and trims every
// slice's capacity to its length, in place.
func (t *interner) object(obj api.Object) api.Object {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return obj
	}
	p := planFor(v.Type().Elem())
	if p == nil {
		return obj
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p(v.Elem(), t)
	return obj
}

// intern returns the table's copy of s, which becomes s if it has none.
// Callers hold mu.
func (t *interner) intern(s string) string {
	if len(s) == 0 || len(s) > internMaxLen {
		return s
	}
	if c, ok := t.cur[s]; ok {
		return c
	}
	if c, ok := t.prev[s]; ok {
		s = c
	}
	if t.cur == nil || len(t.cur) >= internTableSize {
		t.prev, t.cur = t.cur, make(map[string]string, internTableSize)
	}
	t.cur[s] = s
	return s
}

// internPlan interns the strings in v (addressable) with t, and trims
// its slices.
type internPlan func(v reflect.Value, t *interner)

var objectMetaType = reflect.TypeFor[api.ObjectMeta]()

var internPlans sync.Map // reflect.Type → internPlan (nil: no strings)

// planFor returns typ's plan, nil when values of typ hold no string or
// slice the plan can reach.
func planFor(typ reflect.Type) internPlan {
	if p, ok := internPlans.Load(typ); ok {
		return p.(internPlan)
	}
	p := buildPlan(typ, map[reflect.Type]bool{})
	internPlans.Store(typ, p)
	return p
}

func buildPlan(typ reflect.Type, building map[reflect.Type]bool) internPlan {
	if building[typ] {
		// A type that holds itself: look its plan up when it runs.
		return func(v reflect.Value, t *interner) {
			if p := planFor(typ); p != nil {
				p(v, t)
			}
		}
	}
	building[typ] = true
	defer delete(building, typ)
	switch typ.Kind() {
	case reflect.String:
		return func(v reflect.Value, t *interner) {
			s := v.String()
			if c := t.intern(s); unsafe.StringData(c) != unsafe.StringData(s) {
				v.SetString(c)
			}
		}
	case reflect.Pointer:
		elem := buildPlan(typ.Elem(), building)
		if elem == nil {
			return nil
		}
		return func(v reflect.Value, t *interner) {
			if !v.IsNil() {
				elem(v.Elem(), t)
			}
		}
	case reflect.Slice:
		elem := buildPlan(typ.Elem(), building)
		return func(v reflect.Value, t *interner) {
			if n := v.Len(); v.Cap() > n {
				// The decoder grew it by doubling: up to half of it
				// is room for elements that will never come.
				exact := reflect.MakeSlice(typ, n, n)
				reflect.Copy(exact, v)
				v.Set(exact)
			}
			if elem != nil {
				for i := range v.Len() {
					elem(v.Index(i), t)
				}
			}
		}
	case reflect.Map:
		if typ.Elem().Kind() != reflect.String {
			return nil
		}
		return func(v reflect.Value, t *interner) {
			it := v.MapRange()
			for it.Next() {
				s := it.Value().String()
				if c := t.intern(s); unsafe.StringData(c) != unsafe.StringData(s) {
					v.SetMapIndex(it.Key(), reflect.ValueOf(c).Convert(typ.Elem()))
				}
			}
		}
	case reflect.Struct:
		type field struct {
			i int
			p internPlan
		}
		var fields []field
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() || typ == objectMetaType && (f.Name == "UID" || f.Name == "ResourceVersion") {
				// An object's uid and version are its own: interning
				// them would only churn the table.
				continue
			}
			if p := buildPlan(f.Type, building); p != nil {
				fields = append(fields, field{i, p})
			}
		}
		if len(fields) == 0 {
			return nil
		}
		return func(v reflect.Value, t *interner) {
			for _, f := range fields {
				f.p(v.Field(f.i), t)
			}
		}
	}
	return nil
}
