package v1alpha1

import (
	"strconv"
	"strings"
)

// Volume is a virtual disk. Local volumes are qcow2 or raw files on one
// host (thin clones of a cached image when made from one); volumes in an
// nfs or rbd StoragePool live on shared storage, so a VM using them can
// run on any host and survive the loss of one.
type Volume = Resource[VolumeSpec, VolumeStatus]

type VolumeSpec struct {
	// Size of the disk. It may grow (the agent resizes the file and tells a
	// running VM) but not shrink. With a source, empty means the source's
	// size.
	Size Bytes `json:"size,omitempty"`
	// Source, when set, gives the volume its first contents.
	Source VolumeSource `json:"source,omitempty"`
	// Host holds a local volume, or manages a shared one (makes, grows
	// and deletes it, and reports its status; VMs on any host attach it).
	// Empty until the scheduler places the volume, beside the VM that
	// uses it; it cannot change afterwards.
	Host string `json:"host,omitempty"`
	// Pool names the StoragePool the volume lives in. Empty means the
	// volume's host's own disk (the agent's data directory), as before
	// pools existed. It cannot change.
	Pool string `json:"pool,omitempty"`
	// Backend is local, nfs or rbd: the driver of the volume's pool, which
	// the server fills in from the pool (default local without a pool).
	Backend string `json:"backend,omitempty"`
	// Format is qcow2 or raw (default qcow2; rbd volumes are always raw,
	// nfs volumes always qcow2).
	Format string `json:"format,omitempty"`
}

// VolumeSource is where a volume's first contents come from: an Image or a
// Snapshot. At most one is set; with neither the volume starts empty. An
// image name means the tenant's own image of that name if it has one, else
// the shared image.
type VolumeSource struct {
	// Image names an Image to clone the volume from (the tenant's own,
	// else a shared one).
	Image string `json:"image,omitempty"`
	// Snapshot names a Snapshot of the same tenant to clone it from.
	Snapshot string `json:"snapshot,omitempty"`
}

type VolumeStatus struct {
	CommonStatus `json:",inline"`
	// Path of the volume on its host, or its rbd/nfs location.
	Path string `json:"path,omitempty"`
	// AttachedTo names the VM using the volume.
	AttachedTo string `json:"attachedTo,omitempty"`
	// Size is the disk's size as the agent made it (the source's size when
	// spec.size is empty); ActualSize is what it takes on storage.
	Size       Bytes `json:"size,omitempty"`
	ActualSize Bytes `json:"actualSize,omitempty"`
}

// AnnotationOwnerDisk marks a Volume that Hearth's controllers made for
// one image disk of the VirtualMachine that controls it (its controller
// ownerReference). Its value is "<the VM's uid>/<the disk's index in
// spec.disks>". The VM's quota already counts that disk, so the Volume
// costs only what it grows beyond the disk's size. Only the controllers
// may set or change it; a client may remove it, after which the Volume
// counts in full. An ownerReference alone exempts nothing.
const AnnotationOwnerDisk = "hearth.dev/owner-disk"

// OwnerDisk formats the AnnotationOwnerDisk value for disk index of the VM
// with uid.
func OwnerDisk(uid string, index int) string { return uid + "/" + strconv.Itoa(index) }

// ParseOwnerDisk reads an AnnotationOwnerDisk value; ok is false when it is
// malformed.
func ParseOwnerDisk(v string) (uid string, index int, ok bool) {
	uid, idx, found := strings.Cut(v, "/")
	if !found || uid == "" {
		return "", 0, false
	}
	n, err := strconv.Atoi(idx)
	if err != nil || n < 0 || strconv.Itoa(n) != idx {
		return "", 0, false
	}
	return uid, n, true
}

// FinalizerPoolVolume holds a deleted Volume of a shared pool (rbd, nfs)
// until its data is deleted from the pool: the agent of its host deletes
// it and says so (Ready False, reason Deleted), and the server removes
// the finalizer. When the volume's host is lost, the server moves the
// deleted volume to a live host (spec.host), whose agent deletes it: a
// shared volume's data outlives any one host, so someone else must.
const FinalizerPoolVolume = "hearth.dev/pool-volume"

// Volume phases.
const (
	VolumePending   = "Pending"
	VolumeAvailable = "Available"
	VolumeInUse     = "InUse"
	VolumeFailed    = "Failed"
)

// Volume backends.
const (
	BackendLocal = "local"
	BackendNFS   = "nfs"
	BackendRBD   = "rbd"
)

// MinVolumeSize is the smallest volume Hearth makes.
const MinVolumeSize = 1 << 20

func (s *VolumeSpec) Default() {
	if s.Pool != "" {
		// The pool's driver decides both; admission fills them in
		// (server/admission.Pools), since defaulting cannot read the pool.
		if s.Backend == BackendRBD && s.Format == "" {
			s.Format = FormatRaw
		}
		return
	}
	if s.Backend == "" {
		s.Backend = BackendLocal
	}
	if s.Format == "" {
		if s.Backend == BackendRBD {
			s.Format = FormatRaw
		} else {
			s.Format = FormatQCOW2
		}
	}
}

func (s *VolumeSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	src := s.Source
	switch {
	case src.Image != "" && src.Snapshot != "":
		es.Add(path+".source.snapshot", "cannot be set with image: a volume starts from one source")
	case src.Image != "":
		es = append(es, ValidateName(path+".source.image", src.Image)...)
	case src.Snapshot != "":
		es = append(es, ValidateName(path+".source.snapshot", src.Snapshot)...)
	}
	switch {
	case s.Size == 0 && src == VolumeSource{}:
		es.Add(path+".size", "is required for an empty volume")
	case s.Size != 0 && s.Size < MinVolumeSize:
		es.Add(path+".size", "%s is below the minimum of %s", s.Size, Bytes(MinVolumeSize))
	}
	if s.Pool != "" {
		es = append(es, ValidateName(path+".pool", s.Pool)...)
	}
	// With a pool, an empty backend or format is the pool's to fill in.
	if s.Pool == "" || s.Backend != "" {
		es = append(es, ValidateOneOf(path+".backend", s.Backend, BackendLocal, BackendNFS, BackendRBD)...)
	}
	if s.Pool == "" || s.Format != "" {
		es = append(es, ValidateOneOf(path+".format", s.Format, FormatQCOW2, FormatRaw)...)
	}
	if s.Pool == "" && (s.Backend == BackendNFS || s.Backend == BackendRBD) {
		es.Add(path+".pool", "is required for a %s volume: name a StoragePool of driver %s (hearth get storagepools)", s.Backend, s.Backend)
	}
	if s.Backend == BackendRBD && s.Format == FormatQCOW2 {
		es.Add(path+".format", "rbd volumes are raw (Ceph does the thin provisioning)")
	}
	if s.Backend == BackendNFS && s.Format == FormatRaw {
		es.Add(path+".format", "nfs volumes are qcow2 (a raw file on the share would be a full copy)")
	}
	if s.Host != "" {
		es = append(es, ValidateName(path+".host", s.Host)...)
	}
	return es
}

func (s *VolumeSpec) ValidateUpdate(path string, old any) FieldErrors {
	o := old.(*VolumeSpec)
	var es FieldErrors
	switch {
	case s.Size < o.Size && s.Size == 0:
		es.Add(path+".size", "cannot be removed (was %s)", o.Size)
	case s.Size < o.Size:
		es.Add(path+".size", "cannot shrink from %s to %s", o.Size, s.Size)
	}
	if s.Source != o.Source {
		es.Add(path+".source", "cannot change: it only says what the volume started from")
	}
	if s.Pool != o.Pool {
		es.Add(path+".pool", "cannot change (was %q); copy the data to a new volume", o.Pool)
	}
	// With a pool, a write that leaves backend or format out keeps them
	// (admission fills them in from the pool again).
	if s.Backend != o.Backend && (s.Pool == "" || s.Backend != "") {
		es.Add(path+".backend", "cannot change (was %q); copy the data to a new volume", o.Backend)
	}
	if s.Format != o.Format && (s.Pool == "" || s.Format != "") {
		es.Add(path+".format", "cannot change (was %q)", o.Format)
	}
	// A shared volume's data is in its pool, not on its host: the server
	// moves a deleted one off a lost host (admission refuses anyone else).
	if o.Host != "" && s.Host != o.Host && !(o.Shared() && s.Host != "") {
		es.Add(path+".host", "cannot change (was %q): the volume's data is there", o.Host)
	}
	return es
}

func init() {
	register[VolumeSpec, VolumeStatus](KindInfo{
		Kind: "Volume", Plural: "volumes", ShortNames: []string{"volume", "vol"}, Scope: TenantScoped,
		Description: "A virtual disk on a host or on shared storage, empty or cloned from an image or snapshot.",
		PlacedOn:    func(o Object) string { return o.(*Volume).Spec.Host },
		Columns: []Column{
			{Name: "STATUS", Get: func(o Object) string { return o.CommonStatus().Phase }},
			{Name: "SIZE", Get: func(o Object) string {
				v := o.(*Volume)
				if v.Spec.Size != 0 {
					return v.Spec.Size.String()
				}
				if v.Status.Size != 0 {
					return v.Status.Size.Human()
				}
				return ""
			}},
			{Name: "BACKEND", Get: func(o Object) string { return o.(*Volume).Spec.Backend }},
			{Name: "POOL", Wide: true, Get: func(o Object) string { return o.(*Volume).Spec.Pool }},
			{Name: "HOST", Get: func(o Object) string { return o.(*Volume).Spec.Host }},
			{Name: "ATTACHED TO", Get: func(o Object) string { return o.(*Volume).Status.AttachedTo }},
			{Name: "SOURCE", Wide: true, Get: func(o Object) string {
				s := o.(*Volume).Spec.Source
				switch {
				case s.Image != "":
					return "image/" + s.Image
				case s.Snapshot != "":
					return "snapshot/" + s.Snapshot
				}
				return ""
			}},
			{Name: "FORMAT", Wide: true, Get: func(o Object) string { return o.(*Volume).Spec.Format }},
		},
	})
}

// Shared reports whether the volume is on shared storage (an nfs or rbd
// pool), which every host reaches: a VM using it may start on any host.
func (s *VolumeSpec) Shared() bool { return s.Backend == BackendNFS || s.Backend == BackendRBD }
