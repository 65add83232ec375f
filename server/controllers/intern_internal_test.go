package controllers

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	api "hearth.dev/hearth/api/v1alpha1"
)

// vmCopy is a VM as an informer has it, decoded from a watch: every
// string a copy of its own (c clones them), slices with room to spare.
func vmCopy(name, host string) *api.VirtualMachine {
	c := strings.Clone
	now := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: c(api.APIVersion), Kind: c("VirtualMachine")},
		Metadata: api.ObjectMeta{Name: c(name), Tenant: c("lab"), UID: "uid-" + name, ResourceVersion: c("7"), Labels: map[string]string{"app": c("web")}}}
	vm.Spec.Host = c(host)
	vm.Spec.NICs = []api.VMNIC{{Network: c("lan")}}
	vm.Status.Phase, vm.Status.Host = api.VMRunning, c(host)
	vm.Status.Conditions = make([]api.Condition, 0, 4)
	for _, t := range []string{"Scheduled", "Ready", "ResolvedRefs"} {
		vm.Status.SetCondition(api.Condition{Type: c(t), Status: api.ConditionStatus(c("True")), Reason: c("Fine")}, now)
	}
	return vm
}

func sameBytes(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

// TestInternerSharesStrings: after interning, equal strings of two
// objects share one copy (the tenant, the kind, the host, a condition's
// type, a label's value), each object is equal to what it was, and the
// decoder's spare slice capacity is gone.
func TestInternerSharesStrings(t *testing.T) {
	a, b := vmCopy("vm-a", "h1"), vmCopy("vm-b", "h1")
	wantA, wantB := api.DeepCopy(a), api.DeepCopy(b)
	var in interner
	in.object(a)
	in.object(b)
	if !reflect.DeepEqual(a, wantA) || !reflect.DeepEqual(b, wantB) {
		t.Fatalf("interning changed the objects:\n%+v\n%+v", a, b)
	}
	for _, tc := range []struct {
		what string
		x, y string
	}{
		{"tenant", a.Metadata.Tenant, b.Metadata.Tenant},
		{"apiVersion", a.APIVersion, b.APIVersion},
		{"kind", a.Kind, b.Kind},
		{"spec.host", a.Spec.Host, b.Spec.Host},
		{"spec.host and status.host", a.Spec.Host, b.Status.Host},
		{"a NIC's network", a.Spec.NICs[0].Network, b.Spec.NICs[0].Network},
		{"a condition's type", a.Status.Conditions[1].Type, b.Status.Conditions[1].Type},
		{"a condition's status", string(a.Status.Conditions[1].Status), string(b.Status.Conditions[1].Status)},
		{"a label's value", a.Metadata.Labels["app"], b.Metadata.Labels["app"]},
	} {
		if !sameBytes(tc.x, tc.y) {
			t.Errorf("%s: %q and %q are two copies, want one", tc.what, tc.x, tc.y)
		}
	}
	if sameBytes(a.Metadata.Name, b.Metadata.Name) {
		t.Errorf("different names share bytes")
	}
	if c := a.Status.Conditions; cap(c) != len(c) {
		t.Errorf("conditions: len %d cap %d, want the capacity trimmed", len(c), cap(c))
	}
}

// TestInternerIsBounded: however many distinct strings pass, the table
// keeps at most two generations of internTableSize, and a string seen in
// every generation keeps its one copy.
func TestInternerIsBounded(t *testing.T) {
	var in interner
	first := string([]byte("lab"))
	in.mu.Lock()
	defer in.mu.Unlock()
	in.intern(first)
	for i := range 10 * internTableSize {
		in.intern(fmt.Sprintf("name-%d", i))
		if i%(internTableSize/2) == 0 {
			if got := in.intern(string([]byte("lab"))); !sameBytes(got, first) {
				t.Fatalf("after %d strings the common one has a new copy", i)
			}
		}
		if n := len(in.cur) + len(in.prev); n > 2*internTableSize {
			t.Fatalf("the table holds %d strings", n)
		}
	}
	long := string(make([]byte, internMaxLen+1))
	if got := in.intern(long); !sameBytes(got, long) || in.cur[long] != "" {
		t.Errorf("a string longer than %d was interned", internMaxLen)
	}
}

// TestCompactEvent: the shared informers keep of an Event what the
// garbage collector reads, and the collector reads it the same from
// either form.
func TestCompactEvent(t *testing.T) {
	created := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	last := created.Add(time.Minute)
	ev := &api.Event{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Event"},
		Metadata: api.ObjectMeta{Name: "vm-a.1", Tenant: "lab", UID: "u1", ResourceVersion: "9", CreationTimestamp: &created,
			OwnerReferences: []api.OwnerReference{{Kind: "VirtualMachine", Name: "vm-a", UID: "u0"}}},
		Spec: api.EventSpec{InvolvedObject: api.ObjectReference{Kind: "VirtualMachine", Name: "vm-a"}, Type: api.EventNormal,
			Reason: "Started", Message: "QEMU started", LastTimestamp: &last}}
	f := &Informers{}
	got := f.compact(api.DeepCopy(ev))
	if _, ok := got.(*eventExpiry); !ok {
		t.Fatalf("compact kept a %T, want an *eventExpiry", got)
	}
	if !reflect.DeepEqual(*got.GetMetadata(), ev.Metadata) || *got.GetTypeMeta() != ev.TypeMeta {
		t.Errorf("metadata: got %+v, want %+v", *got.GetMetadata(), ev.Metadata)
	}
	for _, o := range []api.Object{ev, got} {
		if at := eventLastSeen(o); at == nil || !at.Equal(last) {
			t.Errorf("%T: last seen %v, want %v", o, at, last)
		}
	}
	if n := reflect.TypeFor[eventExpiry]().Size(); n > reflect.TypeFor[api.Event]().Size()*3/5 {
		t.Errorf("an eventExpiry is %d bytes, an Event %d: not the saving it is for", n, reflect.TypeFor[api.Event]().Size())
	}
}

// BenchmarkCompactVM is what the shared informers add to each VM change
// they read: the decode alone, and the decode with compact.
//
//	go test ./server/controllers -run '^$' -bench CompactVM -benchmem
func BenchmarkCompactVM(b *testing.B) {
	data, err := json.Marshal(vmCopy("vm-a", "host-0001"))
	if err != nil {
		b.Fatal(err)
	}
	for _, compact := range []bool{false, true} {
		b.Run(fmt.Sprintf("compact=%v", compact), func(b *testing.B) {
			f := &Informers{}
			b.ReportAllocs()
			for range b.N {
				vm := &api.VirtualMachine{}
				if err := api.Unmarshal(data, vm); err != nil {
					b.Fatal(err)
				}
				if compact {
					f.compact(vm)
				}
			}
		})
	}
}
