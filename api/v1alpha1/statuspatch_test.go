package v1alpha1

import (
	"reflect"
	"strings"
	"testing"
)

// TestStatusPatchFields: every field of a status patch is a field of the
// status it patches, by JSON name and Go type (a pointer in the patch may
// stand for the value, so unset fields can be left out), so a typo or a
// renamed status field fails here rather than writing nothing.
func TestStatusPatchFields(t *testing.T) {
	for _, tc := range []struct {
		patch, status any
	}{
		{HostHeartbeat{}, HostStatus{}},
		{HostFacts{}, HostStatus{}},
		{HostAllocation{}, HostStatus{}},
		{MachineFacts{}, MachineStatus{}},
		{MachineProfileCount{}, MachineProfileStatus{}},
		{BindingHost{}, VirtualMachineSpec{}},
		{BindingHost{}, VolumeSpec{}},
		{BindingVersion{}, ObjectMeta{}},
	} {
		status := patchFields(reflect.TypeOf(tc.status))
		patch := patchFields(reflect.TypeOf(tc.patch))
		if len(patch) == 0 {
			t.Errorf("%T: no fields found", tc.patch)
		}
		for name, pt := range patch {
			st, ok := status[name]
			if !ok {
				t.Errorf("%T.%s: %T has no field %q", tc.patch, name, tc.status, name)
				continue
			}
			if deref(pt) != deref(st) {
				t.Errorf("%T.%s is %v, but %T.%s is %v", tc.patch, name, pt, tc.status, name, st)
			}
		}
	}
}

// patchFields maps the JSON names of a struct's fields, embedded and
// inline ones flattened, to their types.
func patchFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range patchFields(deref(f.Type)) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}
