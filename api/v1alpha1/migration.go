package v1alpha1

// ConditionMigrated says how a VM's last live migration ended (the agent
// of the host it moved to, which owns its status): True with reason
// Migrated once it runs there; False with MigrationFailed when the move
// did not happen, the message saying why. A failed move is not tried
// again: the condition's observedGeneration is the generation that asked
// for it, and the migration controller (server) puts spec.host back to
// the host the VM still runs on (status.host). A new move (another
// change of spec.host) is a new generation.
const ConditionMigrated = "Migrated"

// Reasons of a VM's Migrated condition.
const (
	ReasonMigrated        = "Migrated"        // it moved live to status.host
	ReasonMigrationFailed = "MigrationFailed" // it did not move; it runs where it was
)

// MigrationFailed reports whether vm's move to its spec.host failed: its
// Migrated condition says so for the generation that asked for it, and
// the VM still runs elsewhere.
func MigrationFailed(vm *VirtualMachine) bool {
	c := vm.Status.Condition(ConditionMigrated)
	return c != nil && c.Status == ConditionFalse && c.Reason == ReasonMigrationFailed &&
		c.ObservedGeneration == vm.Metadata.Generation && vm.Status.Host != "" && vm.Status.Host != vm.Spec.Host
}
