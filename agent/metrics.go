package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"hearth.dev/hearth/reconcile"
	"hearth.dev/hearth/serving"
)

// The agent's Prometheus metrics, served on --metrics-listen (plain HTTP,
// GET /metrics; off unless set): its host's and VMs' counters as the
// monitor last read them (every StatsInterval), its controllers, and the
// Go runtime. VM series are labelled with the VM's tenant and name, so
// the endpoint belongs on a management network, not a tenant's.

var (
	hostLabels = []string{"host"}
	vmLabels   = []string{"host", "tenant", "vm"}
	desc       = func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	dHostCPU     = desc("hearth_host_cpu_seconds_total", "CPU time of the host by mode (/proc/stat), all CPUs together.", "host", "mode")
	dHostCPUs    = desc("hearth_host_cpus", "CPUs of the host.", hostLabels...)
	dHostMem     = desc("hearth_host_memory_bytes", "Memory of the host.", hostLabels...)
	dHostMemAv   = desc("hearth_host_memory_available_bytes", "Memory available for new work (MemAvailable).", hostLabels...)
	dHostLoad    = desc("hearth_host_load1", "The host's one-minute load average.", hostLabels...)
	dHostDiskRd  = desc("hearth_host_disk_read_bytes_total", "Bytes read from each whole disk of the host.", "host", "device")
	dHostDiskWr  = desc("hearth_host_disk_written_bytes_total", "Bytes written to each whole disk of the host.", "host", "device")
	dHostNetRx   = desc("hearth_host_network_receive_bytes_total", "Bytes received by each interface of the host (not loopback, not tun/tap).", "host", "interface")
	dHostNetTx   = desc("hearth_host_network_transmit_bytes_total", "Bytes sent by each interface of the host (not loopback, not tun/tap).", "host", "interface")
	dHostFsSize  = desc("hearth_host_data_filesystem_size_bytes", "Size of the filesystem of the agent's data directory (VM disks, images).", hostLabels...)
	dHostFsAvail = desc("hearth_host_data_filesystem_avail_bytes", "Space left for the agent on the filesystem of its data directory.", hostLabels...)
	dHostVMs     = desc("hearth_host_vms_running", "VMs whose QEMU runs on the host.", hostLabels...)

	dVMUp      = desc("hearth_vm_up", "1 while the VM's QEMU runs.", vmLabels...)
	dVMvCPUs   = desc("hearth_vm_vcpus", "vCPUs of the VM.", vmLabels...)
	dVMvCPUSec = desc("hearth_vm_vcpu_seconds_total", "CPU time of the VM's vCPU threads (/proc, threads from QMP query-cpus-fast).", vmLabels...)
	dVMCPUSec  = desc("hearth_vm_cpu_seconds_total", "CPU time of the VM's whole QEMU process (vCPUs and emulation).", vmLabels...)
	dVMMem     = desc("hearth_vm_memory_bytes", "Memory the VM was given.", vmLabels...)
	dVMRSS     = desc("hearth_vm_memory_resident_bytes", "Resident memory of the VM's QEMU process.", vmLabels...)
	dVMDiskRd  = desc("hearth_vm_disk_read_bytes_total", "Bytes the VM read from each disk (QMP query-blockstats).", "host", "tenant", "vm", "device")
	dVMDiskWr  = desc("hearth_vm_disk_written_bytes_total", "Bytes the VM wrote to each disk (QMP query-blockstats).", "host", "tenant", "vm", "device")
	dVMDiskRdO = desc("hearth_vm_disk_read_ops_total", "Read operations of the VM on each disk.", "host", "tenant", "vm", "device")
	dVMDiskWrO = desc("hearth_vm_disk_write_ops_total", "Write operations of the VM on each disk.", "host", "tenant", "vm", "device")
	dVMNetRx   = desc("hearth_vm_network_receive_bytes_total", "Bytes the VM received on each NIC (its tap's transmit counter).", "host", "tenant", "vm", "nic")
	dVMNetTx   = desc("hearth_vm_network_transmit_bytes_total", "Bytes the VM sent on each NIC (its tap's receive counter).", "host", "tenant", "vm", "nic")
	dVMNetRxP  = desc("hearth_vm_network_receive_packets_total", "Packets the VM received on each NIC.", "host", "tenant", "vm", "nic")
	dVMNetTxP  = desc("hearth_vm_network_transmit_packets_total", "Packets the VM sent on each NIC.", "host", "tenant", "vm", "nic")
)

// Describe is left to the registry (an unchecked collector): the series
// come and go with devices and VMs.
func (m *monitor) Describe(chan<- *prometheus.Desc) {}

// Collect sends the counters the monitor last read.
func (m *monitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	host := m.a.cfg.Name
	h := m.host
	if h.at.IsZero() {
		return
	}
	c := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for mode, v := range h.cpu {
		c(dHostCPU, v, host, mode)
	}
	g(dHostCPUs, float64(h.cpus), host)
	g(dHostMem, float64(h.memTotal), host)
	g(dHostMemAv, float64(h.memAvailable), host)
	g(dHostLoad, h.load1, host)
	for dev, v := range h.disks {
		c(dHostDiskRd, float64(v[0]), host, dev)
		c(dHostDiskWr, float64(v[1]), host, dev)
	}
	for dev, v := range h.nets {
		c(dHostNetRx, float64(v[0]), host, dev)
		c(dHostNetTx, float64(v[1]), host, dev)
	}
	g(dHostFsSize, float64(h.fsSize), host)
	g(dHostFsAvail, float64(h.fsAvail), host)
	g(dHostVMs, float64(len(m.vms)), host)
	uids := make([]string, 0, len(m.vms))
	for uid := range m.vms {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	for _, uid := range uids {
		v := m.vms[uid]
		l := []string{host, v.tenant, v.name}
		g(dVMUp, 1, l...)
		g(dVMvCPUs, float64(v.vcpus), l...)
		c(dVMvCPUSec, v.vcpuSeconds, l...)
		c(dVMCPUSec, v.cpuSeconds, l...)
		g(dVMMem, float64(v.memory), l...)
		g(dVMRSS, float64(v.rss), l...)
		for dev, d := range v.disks {
			ld := append(append([]string{}, l...), dev)
			c(dVMDiskRd, float64(d[0]), ld...)
			c(dVMDiskWr, float64(d[1]), ld...)
			c(dVMDiskRdO, float64(d[2]), ld...)
			c(dVMDiskWrO, float64(d[3]), ld...)
		}
		for nic, n := range v.nics {
			ln := append(append([]string{}, l...), nic)
			c(dVMNetRx, float64(n[0]), ln...)
			c(dVMNetTx, float64(n[1]), ln...)
			c(dVMNetRxP, float64(n[2]), ln...)
			c(dVMNetTxP, float64(n[3]), ln...)
		}
	}
}

// newRegistry gathers the agent's metrics.
func (a *Agent) newRegistry(ctl *reconcile.Metrics) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.mon, ctl, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics on addr until stop is called, which closes
// the listener before it returns: a run that ends (a refused credential)
// frees the address for the next.
func (a *Agent) serveMetrics(addr string, reg *prometheus.Registry) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := serving.New("the agent's metrics endpoint", ln, mux, serving.Limits{}, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(srv.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("metrics listener stopped", "err", err)
		}
	}()
	slog.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		srv.Close()
		<-done
	}, nil
}
