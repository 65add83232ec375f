package auth

import (
	"reflect"
	"slices"

	api "hearth.dev/hearth/api/v1alpha1"
)

// migrationGivenUp says what is wrong with a host's write of the status
// of a VM that is not placed on it, or "" if it is the one such write a
// host may make: the source of a live migration (status.migration.from)
// saying it gave the move up. A source that could not send the VM (the
// destination did not read, the stream broke) and cancelled it is the
// only one that knows; the destination's QEMU may wait on. The write
// may only end the migration (status.migration emptied, phase Migrating
// back to Running, where the VM still runs) and set the Migrated
// condition False with reason MigrationFailed for the VM's generation;
// nothing else of the status changes. The destination then lets go of
// its copy, and the migration controller puts spec.host back.
func migrationGivenUp(host string, old, cur *api.VirtualMachine) string {
	const only = "a host may write the status of a VM not placed on it only as the source of its live migration, to say it gave the move up"
	m := old.Status.Migration
	if m == nil || m.From != host || old.Status.Host != host || cur.Spec.Host != old.Spec.Host || cur.Metadata.UID != old.Metadata.UID {
		return only
	}
	c := cur.Status.Condition(api.ConditionMigrated)
	if cur.Status.Migration != nil || c == nil || c.Status != api.ConditionFalse || c.Reason != api.ReasonMigrationFailed ||
		c.ObservedGeneration != cur.Metadata.Generation {
		return only + ": status.migration emptied and the Migrated condition False with reason MigrationFailed"
	}
	want := old.Status
	want.Migration = nil
	if want.Phase == api.VMMigrating {
		want.Phase = api.VMRunning
	}
	want.Conditions = othersThanMigrated(want.Conditions)
	got := cur.Status
	got.Conditions = othersThanMigrated(got.Conditions)
	if !reflect.DeepEqual(want, got) {
		return only + ": nothing but status.migration, the phase and the Migrated condition may change"
	}
	return ""
}

// othersThanMigrated are cs but for the Migrated condition (nil if none).
func othersThanMigrated(cs []api.Condition) []api.Condition {
	out := slices.DeleteFunc(slices.Clone(cs), func(c api.Condition) bool { return c.Type == api.ConditionMigrated })
	if len(out) == 0 {
		return nil
	}
	return out
}
