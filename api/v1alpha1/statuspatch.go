package v1alpha1

import "time"

// Status patches: the parts of a status that a writer merge-patches
// without reading the object first (client.PatchStatus), because it owns
// those fields alone and writes them often. Everything else writes status
// through client.WriteStatus (read, change, write conditional on the
// resourceVersion). Their JSON names are the status's own, which a test
// checks (TestStatusPatchFields), so the compiler and the test catch what
// a map[string]any would not.

// HostHeartbeat is what an agent writes into its Host's status with every
// beat: its lease, and with the first beat (and after one that failed)
// its phase, the Ready condition and the machine's facts.
type HostHeartbeat struct {
	Phase         string      `json:"phase"`
	LastHeartbeat time.Time   `json:"lastHeartbeat"`
	Conditions    []Condition `json:"conditions,omitempty"`
	// Facts are sent when set: their fields are the status's own.
	*HostFacts `json:",omitempty"`
}

// HostFacts are what an agent reports about its machine. Every field is
// sent, false and zero included, so a fact that became false is written.
type HostFacts struct {
	CPUs            int    `json:"cpus"`
	Memory          Bytes  `json:"memory"`
	Disk            Bytes  `json:"disk"`
	Architecture    string `json:"architecture"`
	KVM             bool   `json:"kvm"`
	KernelVersion   string `json:"kernelVersion"`
	AgentVersion    string `json:"agentVersion"`
	AgentURL        string `json:"agentURL"`
	AgentCertSHA256 string `json:"agentCertSHA256"`
}

// HostAllocation is what the scheduler writes into a Host's status: what
// the VMs placed on it ask for.
type HostAllocation struct {
	AllocatedCPUs   int   `json:"allocatedCPUs"`
	AllocatedMemory Bytes `json:"allocatedMemory"`
}

// MachineFacts are what a boot service observed of a Machine, the only
// part of its status it may write. Unset fields are left as they are;
// SSHHostKeys set to a pointer to nil clears the keys (a stateless boot
// makes new ones).
type MachineFacts struct {
	VendorClass string     `json:"vendorClass,omitempty"`
	UUID        string     `json:"uuid,omitempty"`
	Firmware    string     `json:"firmware,omitempty"`
	Addresses   []string   `json:"addresses,omitempty"`
	SSHHostKeys *[]string  `json:"sshHostKeys,omitempty"`
	InstalledAt *time.Time `json:"installedAt,omitempty"`
	LastBoot    *time.Time `json:"lastBoot,omitempty"`
	LastSeen    *time.Time `json:"lastSeen,omitempty"`
}

// MachineProfileCount is what the machines controller writes into a
// MachineProfile's status: how many machines boot it.
type MachineProfileCount struct {
	Machines int `json:"machines"`
}

// Binding is the spec patch that places an object on a host (the
// scheduler's VMs, volume placement's Volumes), conditional on the
// version the decision was made on: a changed object is decided again,
// never bound on a stale view.
type Binding struct {
	Metadata BindingVersion `json:"metadata"`
	Spec     BindingHost    `json:"spec"`
}

// BindingVersion is the resourceVersion a Binding is conditional on.
type BindingVersion struct {
	ResourceVersion string `json:"resourceVersion"`
}

// BindingHost is the host a Binding places its object on.
type BindingHost struct {
	Host string `json:"host"`
}

// BindTo is the Binding of an object at resourceVersion rv to host.
func BindTo(rv, host string) Binding {
	return Binding{Metadata: BindingVersion{ResourceVersion: rv}, Spec: BindingHost{Host: host}}
}

// BindingsPath binds several VirtualMachines to hosts in one request
// (BindingRequest, answered with a BindingResponse): what the scheduler
// writes, a batch at a time.
const BindingsPath = PathPrefix + "/bindings"

// BindingRequest is a batch of VirtualMachine bindings. Each is what a
// Binding patch of that VM would be (conditional on its resourceVersion,
// checked and authorized on its own), and each VM also gets a Scheduled
// event; all are written in one etcd transaction, but each succeeds or
// fails alone.
type BindingRequest struct {
	// Items are the bindings, at most 500.
	Items []BindingItem `json:"items"`
}

// BindingItem binds one VirtualMachine.
type BindingItem struct {
	// Tenant and Name name the VirtualMachine.
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	// ResourceVersion is the version the decision was made on: a VM
	// changed since is not bound (a Conflict), so it is decided again.
	ResourceVersion string `json:"resourceVersion"`
	// Host is where the VM goes.
	Host string `json:"host"`
}

// BindingResponse says what became of each item of a BindingRequest, in
// the same order.
type BindingResponse struct {
	Items []BindingOutcome `json:"items"`
}

// BindingOutcome is what became of one binding.
type BindingOutcome struct {
	// ResourceVersion is the bound VM's new version; empty when Error is
	// set.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Error is why the binding was not made (Conflict: the VM changed;
	// NotFound: it is gone; Forbidden; Invalid).
	Error *Status `json:"error,omitempty"`
}

// StoragePoolUsage is what a host that reaches a shared StoragePool
// writes into its status: the pool's size and use as the storage reports
// them (Ceph's `ceph df`, the NFS server's FSSTAT), the only part of a
// pool's status a host may write.
type StoragePoolUsage struct {
	Capacity  Bytes `json:"capacity"`
	Used      Bytes `json:"used"`
	Available Bytes `json:"available"`
}
