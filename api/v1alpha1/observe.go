package v1alpha1

import "time"

// The bodies of the observability and power endpoints that are not
// objects: a host's or VM's recent figures, a machine's BMC sensors, and
// a machine's power through the API (served at the subresources below).

// The subresources of objects that are not objects themselves.
const (
	// SubresourceStats is the recent history of a Host's or a VM's key
	// figures (Stats): hosts/NAME/stats, tenants/T/virtualmachines/NAME/stats.
	SubresourceStats = "stats"
	// SubresourceSensors is a Machine's BMC sensors (SensorReadings):
	// machines/NAME/sensors.
	SubresourceSensors = "sensors"
	// SubresourcePower switches a Machine's power (PowerRequest,
	// PowerResponse): machines/NAME/power.
	SubresourcePower = "power"
)

// StatsSample is one moment of a host's or a VM's key figures. Rates are
// over the interval before Time.
type StatsSample struct {
	Time time.Time `json:"time"`
	// CPU is the percentage of the host's CPUs in use, or of the VM's
	// vCPUs (its vCPU threads' time).
	CPU float64 `json:"cpu"`
	// Memory is bytes in use: the host's total less what is available, or
	// the resident memory of the VM's QEMU.
	Memory int64 `json:"memory"`
	// DiskRead and DiskWrite are disk throughput in bytes per second.
	DiskRead  float64 `json:"diskRead"`
	DiskWrite float64 `json:"diskWrite"`
	// NetRx and NetTx are network throughput in bytes per second, as the
	// VM sees it (NetRx is what the guest received).
	NetRx float64 `json:"netRx"`
	NetTx float64 `json:"netTx"`
}

// Stats is the recent history of a host's or a VM's key figures, kept in
// memory by the host's agent: one sample per interval, oldest first.
type Stats struct {
	// Kind is "Stats".
	Kind string `json:"kind"`
	// Object is what the samples are of: Host/NAME or VirtualMachine/UID.
	Object string `json:"object"`
	// Interval is the time between samples, such as 10s.
	Interval string        `json:"interval"`
	Samples  []StatsSample `json:"samples"`
}

// Sensor is one reading of a machine's BMC: a temperature, a fan's speed,
// the power drawn, or a discrete state.
type Sensor struct {
	Name string `json:"name"`
	// Value and Unit are set for numeric readings ("45", "degrees C").
	Value *float64 `json:"value,omitempty"`
	Unit  string   `json:"unit,omitempty"`
	// Reading is the BMC's text for readings that are not numbers
	// ("0x01", "Not Readable").
	Reading string `json:"reading,omitempty"`
	// Status is ipmitool's: ok, ns (no reading), nc, cr, nr (non-critical,
	// critical, non-recoverable thresholds crossed).
	Status string `json:"status"`
}

// SensorReadings are one machine's BMC sensors at one moment.
type SensorReadings struct {
	// Kind is "SensorReadings".
	Kind    string    `json:"kind"`
	Machine string    `json:"machine"`
	Time    time.Time `json:"time"`
	Sensors []Sensor  `json:"sensors"`
	// Error says why the BMC could not be read, if it could not.
	Error string `json:"error,omitempty"`
}

// PowerRequest asks for a power action on a Machine.
type PowerRequest struct {
	// Action is on, off, cycle or status.
	Action string `json:"action"`
	// NetworkBoot boots from the network this once (IPMI and Redfish).
	NetworkBoot bool `json:"networkBoot,omitempty"`
}

// PowerResponse says what was done, and the power state read afterwards
// when the driver can read it.
type PowerResponse struct {
	// Kind is "PowerResponse".
	Kind    string `json:"kind"`
	Machine string `json:"machine"`
	Action  string `json:"action"`
	// State is the power state read afterwards (On, Off), when the
	// driver can read it.
	State  string `json:"state,omitempty"`
	Driver string `json:"driver"`
}
