package v1alpha1

// Condition types and reasons, one place for every writer: a condition's
// type and reason are API (people filter on them, the CLI and the
// dashboard show them), so they are spelled once. Each type has one
// writer (see docs/ARCHITECTURE.md, "Who writes which field"); the
// writer is named beside it.

// Condition types.
const (
	// ConditionReady says whether an object is what its spec asks for,
	// and while it is not, why: written by the agent on VMs, Volumes and
	// Snapshots and on its Host (the host-liveness controller sets it
	// False when the lease runs out), by the vmset controller on
	// VirtualMachineSets.
	ConditionReady = "Ready"
	// ConditionRunning says whether a VM's guest runs (its agent).
	ConditionRunning = "Running"
	// ConditionBound is False while the volume-placement controller has
	// not placed a Volume or Snapshot on a host; a Volume's agent turns
	// it True once it is.
	ConditionBound = "Bound"
	// ConditionResized is False while a larger spec.size of a Volume
	// waits for the running VM that holds it to restart (its agent).
	ConditionResized = "Resized"
	// ConditionReplicaFailure says a VirtualMachineSet could not make or
	// remove a replica (the vmset controller).
	ConditionReplicaFailure = "ReplicaFailure"
	// ConditionUploaded is True once an uploaded Image's bytes are on the
	// server (the upload handler).
	ConditionUploaded = "Uploaded"
	// ConditionProfileMatched, ConditionApproved and ConditionInstalled
	// are a Machine's lifecycle (the machines controller): the profile it
	// boots, whether it may boot it, and for install profiles whether the
	// installer has reported success.
	ConditionProfileMatched = "ProfileMatched"
	ConditionApproved       = "Approved"
	ConditionInstalled      = "Installed"
	// ConditionReported says whether the system a Machine booted from its
	// profile has reported back to the boot service (the machines
	// controller): Ready and Installed wait for it.
	ConditionReported = "Reported"
)

// Reasons of a VirtualMachine's Running and Ready conditions (its agent).
// A VM that fails carries the same reason and message in both, and phase
// Failed; one that waits for something (a volume being made) carries it
// with phase Starting.
const (
	ReasonPreparing   = "Preparing"   // fetching images, making disks and the seed
	ReasonBooting     = "Booting"     // QEMU runs; the guest has not written to its console yet
	ReasonGuestOutput = "GuestOutput" // QEMU runs and the guest writes to its console
	ReasonVMRunning   = "Running"     // Ready: running as asked
	ReasonVMPaused    = "Paused"      // its CPUs are paused
	ReasonVMStopped   = "Stopped"     // no process, as asked
	ReasonCrashed     = "Crashed"     // QEMU exited without the agent stopping it
	// ReasonGuestShutdown: the guest powered itself off (phase Stopped
	// under restart policies OnFailure and Never, which leave it so until
	// a person asks; phase Starting while Always waits to start it again).
	ReasonGuestShutdown = "GuestShutdown"
	// ReasonShuttingDown: the agent pressed the guest's ACPI power button
	// (a stop or a restart) and waits for it to power off; past the
	// agent's --shutdown-timeout it kills QEMU. A guest still booting may
	// not listen to the button yet, so the wait can be the whole timeout.
	ReasonShuttingDown = "ShuttingDown"

	ReasonImageNotFound     = "ImageNotFound"     // a disk, kernel or initrd names no Image the VM's tenant may use
	ReasonVolumeNotFound    = "VolumeNotFound"    // a disk names no Volume of the tenant
	ReasonVolumeNotReady    = "VolumeNotReady"    // a Volume it names is not made on this host yet (a wait; a Snapshot's too)
	ReasonSSHKeyNotFound    = "SSHKeyNotFound"    // spec.cloudInit.sshKeys names no SSHKey of the tenant
	ReasonWaitingForImage   = "WaitingForImage"   // an uploaded image's bytes have not arrived yet (a wait)
	ReasonImageFetchFailed  = "ImageFetchFailed"  // an image could not be fetched or did not match its checksum
	ReasonWaitingForNetwork = "WaitingForNetwork" // a NIC's port on its network is not on the host yet (a wait)
	ReasonPrepareFailed     = "PrepareFailed"     // anything else that kept its disks, boot files or seed from being made
	ReasonStartFailed       = "StartFailed"       // QEMU did not start
)

// Reasons of a Host's Ready condition.
const (
	ReasonAgentHeartbeat = "AgentHeartbeat" // the agent renews its lease (the agent)
	ReasonLeaseExpired   = "LeaseExpired"   // it did not (the host-liveness controller)
)

// Reasons of the Ready and Resized conditions of Volumes and Snapshots
// (their agent) and of Bound (the volume-placement controller).
const (
	ReasonWaiting          = "Waiting"          // for something it is made from, or for a host
	ReasonDownloadingImage = "DownloadingImage" // the image it is cloned from is being fetched
	ReasonCreated          = "Created"          // the volume's file is there
	ReasonCreateFailed     = "CreateFailed"
	ReasonPendingRestart   = "PendingRestart" // a larger size waits for its VM to restart
	ReasonTaken            = "Taken"          // the snapshot's file is there
	ReasonSnapshotFailed   = "SnapshotFailed"
	ReasonFileMissing      = "FileMissing"   // a taken snapshot's file is gone
	ReasonVolumeMissing    = "VolumeMissing" // a snapshot's volume is not on its host
	ReasonVolumeInUse      = "VolumeInUse"   // a running VM holds the snapshot's volume
	ReasonDeleted          = "Deleted"       // a deleted volume's data is gone from its pool (FinalizerPoolVolume)
	ReasonBound            = "Bound"         // placed on a host (Bound True, its agent)
)

// Reasons of a VM's Scheduled condition (the API server in the binding
// write, the scheduler when no host fits).
const (
	ReasonScheduled     = "Scheduled"
	ReasonUnschedulable = "Unschedulable"
)

// Reasons of a VirtualMachineSet's conditions (the vmset controller).
const (
	ReasonAllReplicasReady = "AllReplicasReady"
	ReasonReplicasNotReady = "ReplicasNotReady"
	ReasonFailedScale      = "FailedScale"
	ReasonScaled           = "Scaled"
)

// Reasons of a Machine's conditions (the machines controller). The
// ProfileMatched reasons of a failed match are MatchProfile's (machinelifecycle.go).
const (
	ReasonNamed              = "Named"   // ProfileMatched: spec.profile names it
	ReasonMatched            = "Matched" // ProfileMatched: its selector picked it
	ReasonApproved           = "Approved"
	ReasonAutoApproved       = "AutoApproved"
	ReasonWaitingForApproval = "WaitingForApproval"
	ReasonInstalled          = "Installed"
	ReasonReinstallRequested = "ReinstallRequested"
	ReasonNotInstalled       = "NotInstalled"
	ReasonReported           = "Reported"         // Reported: the report came
	ReasonWaitingForReport   = "WaitingForReport" // Reported: booted, no report yet
)

// ReasonUploaded is the reason of an Image's Uploaded condition.
const ReasonUploaded = "Uploaded"

// ConditionHighAvailability says whether a VM with spec.highAvailability
// would be, or is being, restarted elsewhere if its host were lost, and
// each step of a failover (the failover controller): True with reason
// Protected or Restarted; False with HostLost, Fencing, Fenced,
// Restarting while it fails over, and with NotFenced or FenceFailed when
// it cannot (the VM then stays where it was).
const ConditionHighAvailability = "HighAvailability"

// Reasons of a VM's HighAvailability condition.
const (
	ReasonHAProtected   = "Protected"   // its host can be fenced: it would be restarted elsewhere
	ReasonHAUnprotected = "Unprotected" // its host cannot be fenced: it would not
	ReasonHostLost      = "HostLost"    // its host's lease ran out
	ReasonFencing       = "Fencing"     // powering the host's Machine off
	ReasonFenceFailed   = "FenceFailed" // the power driver failed; tried again
	ReasonNotFenced     = "NotFenced"   // no way to fence the lost host: not restarted
	ReasonFenced        = "Fenced"      // the host's Machine is off
	ReasonRestarting    = "Restarting"  // placed again, to start on another host
	ReasonRestarted     = "Restarted"   // runs on another host after a failover
)
