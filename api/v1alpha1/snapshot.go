package v1alpha1

import (
	"strconv"
	"time"
)

// Snapshot is a point-in-time copy of a Volume. New volumes can start from
// it (spec.source.snapshot). A snapshot of a local volume lives on the
// volume's host; a snapshot of a volume in a shared pool lives in the
// pool (an RBD snapshot, or a copy on the NFS share), and volumes made
// from it are in the same pool.
type Snapshot = Resource[SnapshotSpec, SnapshotStatus]

type SnapshotSpec struct {
	// Volume names the Volume (same tenant) to snapshot.
	Volume string `json:"volume"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Host holds a snapshot of a local volume: the volume's host. The
	// server fills it in, as the scheduler does a VM's host, so that host's
	// agent takes the snapshot; it cannot change once set.
	Host string `json:"host,omitempty"`
}

type SnapshotStatus struct {
	CommonStatus `json:",inline"`
	// ReadyToUse says the snapshot is complete and volumes can start from it.
	ReadyToUse bool `json:"readyToUse,omitempty"`
	// Size is the size of the volume when it was taken.
	Size Bytes `json:"size,omitempty"`
	// TakenAt is the moment the snapshot holds.
	TakenAt *time.Time `json:"takenAt,omitempty"`
	// Pool is the StoragePool of a snapshot of a volume in a shared pool,
	// and VolumeUID the uid of that volume: the snapshot lives inside it,
	// in the pool, and is named by both, so volumes can still be cloned
	// from it and it can be deleted after the Volume object is gone.
	Pool      string `json:"pool,omitempty"`
	VolumeUID string `json:"volumeUID,omitempty"`
}

// Snapshot phases.
const (
	SnapshotPending = "Pending"
	SnapshotReady   = "Ready"
	SnapshotFailed  = "Failed"
)

func (s *SnapshotSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.Volume == "" {
		es.Add(path+".volume", "is required")
	} else {
		es = append(es, ValidateName(path+".volume", s.Volume)...)
	}
	if s.Host != "" {
		es = append(es, ValidateName(path+".host", s.Host)...)
	}
	return es
}

func (s *SnapshotSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*SnapshotSpec)
	var es FieldErrors
	if s.Volume != o.Volume {
		es.Add(path+".volume", "cannot change (was %q); take a new snapshot", o.Volume)
	}
	if o.Host != "" && s.Host != o.Host {
		es.Add(path+".host", "cannot change (was %q): the snapshot's data is there", o.Host)
	}
	return es
}

func init() {
	register[SnapshotSpec, SnapshotStatus](KindInfo{
		Kind: "Snapshot", Plural: "snapshots", ShortNames: []string{"snapshot", "snap"}, Scope: TenantScoped,
		Description: "A point-in-time copy of a volume that new volumes can start from.",
		PlacedOn:    func(o Object) string { return o.(*Snapshot).Spec.Host },
		Columns: []Column{
			{Name: "VOLUME", Get: func(o Object) string { return o.(*Snapshot).Spec.Volume }},
			{Name: "READY", Get: func(o Object) string { return strconv.FormatBool(o.(*Snapshot).Status.ReadyToUse) }},
			{Name: "SIZE", Get: func(o Object) string {
				if s := o.(*Snapshot).Status.Size; s != 0 {
					return s.Human()
				}
				return ""
			}},
			{Name: "HOST", Wide: true, Get: func(o Object) string { return o.(*Snapshot).Spec.Host }},
		},
	})
}
