package v1alpha1

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Host is a machine that runs `hearth agent`. The agent registers it,
// reports its capacity, and renews its lease through HostLeasePath (and,
// now and then or with an older server, by writing status.lastHeartbeat);
// a Host whose lease runs out becomes NotReady.
type Host = Resource[HostSpec, HostStatus]

type HostSpec struct {
	// Site the host belongs to.
	Site string `json:"site,omitempty"`
	// Address is the host's underlay IP, which tenant networks' VXLAN
	// tunnels and the overlay use to reach it.
	Address string `json:"address,omitempty"`
	// Unschedulable hosts get no new VMs (cordon).
	Unschedulable bool `json:"unschedulable,omitempty"`
	// CPUOvercommit and MemoryOvercommit multiply capacity for scheduling
	// (1.0 = none). Defaults: 4 for CPU, 1 for memory.
	CPUOvercommit    float64 `json:"cpuOvercommit,omitempty"`
	MemoryOvercommit float64 `json:"memoryOvercommit,omitempty"` // see CPUOvercommit
	// Reserved is kept back for the host itself.
	ReservedCPUs   int   `json:"reservedCPUs,omitempty"`
	ReservedMemory Bytes `json:"reservedMemory,omitempty"` // see ReservedCPUs
	// LeaseSeconds is how long the host stays Ready without a heartbeat.
	LeaseSeconds int `json:"leaseSeconds,omitempty"`
	// Machine names the Machine this host runs on, whose power driver
	// fences the host (powers it off) before its highly available VMs
	// restart elsewhere. Empty means the Machine of the host's own name,
	// if there is one.
	Machine string `json:"machine,omitempty"`
}

type HostStatus struct {
	CommonStatus `json:",inline"`
	CPUs         int    `json:"cpus,omitempty"`
	Memory       Bytes  `json:"memory,omitempty"`
	Disk         Bytes  `json:"disk,omitempty"`
	Architecture string `json:"architecture,omitempty"`
	// KVM says whether hardware virtualisation really works here (tried,
	// not just /dev/kvm present); without it VMs run under TCG.
	KVM           bool       `json:"kvm,omitempty"`
	AgentVersion  string     `json:"agentVersion,omitempty"`
	KernelVersion string     `json:"kernelVersion,omitempty"`
	LastHeartbeat *time.Time `json:"lastHeartbeat,omitempty"`
	// AgentURL is where the server reaches the agent (consoles, logs),
	// and AgentCertSHA256 pins the agent's self-signed certificate.
	AgentURL        string `json:"agentURL,omitempty"`
	AgentCertSHA256 string `json:"agentCertSHA256,omitempty"`
	// Allocated is what the VMs placed on the host ask for.
	AllocatedCPUs   int   `json:"allocatedCPUs,omitempty"`
	AllocatedMemory Bytes `json:"allocatedMemory,omitempty"`
}

// Allocatable is what the scheduler may place on a host of this spec and
// status: its capacity less the reserve, times the overcommit. Memory is
// rounded down to whole MiB, as VMs are sized in MiB.
func (s *HostSpec) Allocatable(st *HostStatus) (cpus float64, memory Bytes) {
	cpus = float64(st.CPUs-s.ReservedCPUs) * s.CPUOvercommit
	memory = Bytes(int64(float64(st.Memory-s.ReservedMemory)*s.MemoryOvercommit) >> 20 << 20)
	return cpus, memory
}

// Host phases.
const (
	HostReady    = "Ready"
	HostNotReady = "NotReady"
)

// The agent checks its host at start (package doctor) and reports each
// kind of check as a condition (KernelFeatures, QEMU, KVM, DiskImages,
// DataDir, ClockSync, BridgeFiltering…) with one of these reasons. A
// failure means the host cannot run VMs: the agent then also sets Ready
// to False with reason HostChecksFailed and the phase NotReady, so the
// scheduler places nothing there.
const (
	HostCheckPassed  = "Passed"
	HostCheckWarning = "Warning"
	HostCheckFailed  = "Failed"
	HostCheckSkipped = "NotChecked"
	HostChecksFailed = "HostChecksFailed"
)

// A host's agent says in the condition NetworkReady whether the host
// carries its tenant networks as the API says: True (NetworkApplied), or
// False with the first kind of trouble as the reason and what is wrong in
// the message; each problem is also said once as a Warning event on the
// Host, with the same reason, when it appears.
const (
	ConditionNetworkReady = "NetworkReady"
	// NetworkApplied: the host's network state is applied.
	NetworkApplied = "NetworkApplied"
	// NetworkApplyFailed: the data plane refused or failed part of the
	// state (a missing external interface, a link the kernel would not
	// make); the networks concerned are not carried.
	NetworkApplyFailed = "NetworkApplyFailed"
	// NetworkDHCPFailed: a subnet's DHCP server could not start.
	NetworkDHCPFailed = "NetworkDHCPFailed"
	// NetworkDNSFailed: a network's DNS and metadata servers could not
	// start in its router.
	NetworkDNSFailed = "NetworkDNSFailed"
	// NetworkInvalid: something the API says cannot be carried as it is
	// (a network without a VNI, no device for an external network): the
	// objects concerned are left out.
	NetworkInvalid = "NetworkInvalid"
)

// hostProblems lists the types of a host's check conditions with reason,
// in the order the agent wrote them.
func hostProblems(h *Host, reason string) []string {
	var out []string
	for _, c := range h.Status.Conditions {
		if c.Type != "Ready" && c.Status == ConditionFalse && c.Reason == reason {
			out = append(out, c.Type)
		}
	}
	return out
}

// hostStatus is the STATUS column: the phase, and for a host whose checks
// failed, which (hearth describe host says why and what to do).
func hostStatus(h *Host) string {
	phase := h.Status.Phase
	if r := h.Status.Condition("Ready"); r != nil && r.Status == ConditionFalse && r.Reason == HostChecksFailed {
		if failed := hostProblems(h, HostCheckFailed); len(failed) > 0 {
			return phase + " (" + strings.Join(failed, ", ") + ")"
		}
	}
	return phase
}

// FenceMachine is the Machine whose power fences host h: its
// spec.machine, else the host's own name.
func FenceMachine(h *Host) string {
	if h.Spec.Machine != "" {
		return h.Spec.Machine
	}
	return h.Metadata.Name
}

// DefaultHostLeaseSeconds is how long a Host stays Ready without a heartbeat.
const DefaultHostLeaseSeconds = 40

func (s *HostSpec) Default() {
	if s.CPUOvercommit == 0 {
		s.CPUOvercommit = 4
	}
	if s.MemoryOvercommit == 0 {
		s.MemoryOvercommit = 1
	}
	if s.LeaseSeconds == 0 {
		s.LeaseSeconds = DefaultHostLeaseSeconds
	}
}

func (s *HostSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.Site != "" {
		es = append(es, ValidateName(path+".site", s.Site)...)
	}
	if s.Address != "" {
		_, e := ValidateIP(path+".address", s.Address)
		es = append(es, e...)
	}
	if s.CPUOvercommit < 0.1 || s.CPUOvercommit > 64 {
		es.Add(path+".cpuOvercommit", "%g is out of range (0.1 to 64)", s.CPUOvercommit)
	}
	if s.MemoryOvercommit < 0.1 || s.MemoryOvercommit > 16 {
		es.Add(path+".memoryOvercommit", "%g is out of range (0.1 to 16)", s.MemoryOvercommit)
	}
	if s.ReservedCPUs < 0 {
		es.Add(path+".reservedCPUs", "%d is negative", s.ReservedCPUs)
	}
	if s.Machine != "" {
		es = append(es, ValidateName(path+".machine", s.Machine)...)
	}
	if s.LeaseSeconds < 5 || s.LeaseSeconds > 3600 {
		es.Add(path+".leaseSeconds", "%d is out of range (5 to 3600)", s.LeaseSeconds)
	}
	return es
}

func init() {
	register[HostSpec, HostStatus](KindInfo{
		Kind: "Host", Plural: "hosts", ShortNames: []string{"host"}, Scope: ClusterScoped,
		Description: "A machine running the Hearth agent, with its capacity and liveness.",
		PlacedOn:    func(o Object) string { return o.GetMetadata().Name },
		Columns: []Column{
			{Name: "STATUS", Get: func(o Object) string { return hostStatus(o.(*Host)) }},
			{Name: "SITE", Get: func(o Object) string { return o.(*Host).Spec.Site }},
			// What VMs ask for of what the scheduler may place (capacity
			// less the reserve, times the overcommit), not of the bare
			// capacity: 6/8 on a 2-CPU host with the default 4x overcommit.
			{Name: "CPUS (USED/ALLOCATABLE)", Get: func(o Object) string {
				h := o.(*Host)
				cpus, _ := h.Spec.Allocatable(&h.Status)
				return fmt.Sprintf("%d/%s", h.Status.AllocatedCPUs, strconv.FormatFloat(cpus, 'f', -1, 64))
			}},
			{Name: "MEMORY (USED/ALLOCATABLE)", Get: func(o Object) string {
				h := o.(*Host)
				_, mem := h.Spec.Allocatable(&h.Status)
				return h.Status.AllocatedMemory.Human() + "/" + mem.Human()
			}},
			{Name: "CAPACITY", Wide: true, Get: func(o Object) string {
				h := o.(*Host)
				return fmt.Sprintf("%d CPUs, %s", h.Status.CPUs, h.Status.Memory.Human())
			}},
			{Name: "ADDRESS", Wide: true, Get: func(o Object) string { return o.(*Host).Spec.Address }},
			{Name: "KVM", Wide: true, Get: func(o Object) string { return strconv.FormatBool(o.(*Host).Status.KVM) }},
			{Name: "ARCH", Wide: true, Get: func(o Object) string { return o.(*Host).Status.Architecture }},
			{Name: "WARNINGS", Wide: true, Get: func(o Object) string {
				if w := hostProblems(o.(*Host), HostCheckWarning); len(w) > 0 {
					return strings.Join(w, ",")
				}
				return "<none>"
			}},
		},
	})
}

// HostLeasePath is where a host renews its lease (POST, no body; the
// answer is a HostLeaseRenewal). Only the host's own credential may.
func HostLeasePath(host string) string {
	return PathPrefix + "/hosts/" + url.PathEscape(host) + "/heartbeat"
}

// HostLeaseRenewal is what renewing a host's lease answers.
type HostLeaseRenewal struct {
	// LeaseSeconds is the lease renewed (the Host's spec.leaseSeconds).
	LeaseSeconds int `json:"leaseSeconds"`
	// Phase is the Host's: an agent whose Host's phase is not what it
	// would write (marked NotReady while it was away) writes its status
	// again.
	Phase string `json:"phase,omitempty"`
}
