package v1alpha1

import "testing"

func TestMigrationFailed(t *testing.T) {
	failed := func(gen int64, status ConditionStatus, reason string) *VirtualMachine {
		vm := &VirtualMachine{}
		vm.Metadata.Generation = 3
		vm.Spec.Host, vm.Status.Host = "h2", "h1"
		vm.Status.Conditions = []Condition{{Type: ConditionMigrated, Status: status, Reason: reason, ObservedGeneration: gen}}
		return vm
	}
	for _, c := range []struct {
		name string
		vm   *VirtualMachine
		want bool
	}{
		{"failed at this generation", failed(3, ConditionFalse, ReasonMigrationFailed), true},
		{"failed at an older generation: a new move", failed(2, ConditionFalse, ReasonMigrationFailed), false},
		{"moved", failed(3, ConditionTrue, ReasonMigrated), false},
		{"no condition", func() *VirtualMachine {
			v := failed(3, ConditionFalse, ReasonMigrationFailed)
			v.Status.Conditions = nil
			return v
		}(), false},
		{"spec and status agree already", func() *VirtualMachine {
			v := failed(3, ConditionFalse, ReasonMigrationFailed)
			v.Spec.Host = "h1"
			return v
		}(), false},
		{"runs nowhere", func() *VirtualMachine {
			v := failed(3, ConditionFalse, ReasonMigrationFailed)
			v.Status.Host = ""
			return v
		}(), false},
	} {
		if got := MigrationFailed(c.vm); got != c.want {
			t.Errorf("%s: MigrationFailed = %v, want %v", c.name, got, c.want)
		}
	}
}
