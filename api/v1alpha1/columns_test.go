package v1alpha1

import "testing"

// column returns the value of a kind's column for obj.
func column(t *testing.T, obj Object, name string) string {
	t.Helper()
	for _, c := range kinds[obj.GetTypeMeta().Kind].Columns {
		if c.Name == name {
			return c.Get(obj)
		}
	}
	t.Fatalf("%s has no column %q", obj.GetTypeMeta().Kind, name)
	return ""
}

// TestColumnsForPeople: a host shows what is used of what the scheduler
// may place (with the overcommit), and says so; sizes of files are
// rounded.
func TestColumnsForPeople(t *testing.T) {
	h := &Host{TypeMeta: TypeMeta{Kind: "Host"}, Spec: HostSpec{ReservedMemory: 512 << 20},
		Status: HostStatus{CPUs: 2, Memory: 4 << 30, AllocatedCPUs: 3, AllocatedMemory: 1 << 30}}
	h.Spec.Default()
	for col, want := range map[string]string{
		"CPUS (USED/ALLOCATABLE)":   "3/8",
		"MEMORY (USED/ALLOCATABLE)": "1Gi/3.5Gi",
		"CAPACITY":                  "2 CPUs, 4Gi",
	} {
		if got := column(t, h, col); got != want {
			t.Errorf("host %s = %q, want %q", col, got, want)
		}
	}
	img := &Image{TypeMeta: TypeMeta{Kind: "Image"}, Status: ImageStatus{Size: 205120 << 10, VirtualSize: 2 << 30}}
	if got := column(t, img, "SIZE"); got != "200Mi" {
		t.Errorf("image SIZE = %q, want 200Mi", got)
	}
	if got := column(t, img, "VIRTUAL SIZE"); got != "2Gi" {
		t.Errorf("image VIRTUAL SIZE = %q, want 2Gi", got)
	}
}
