package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/agent/console"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
)

// The agent measures its host and every VM on it every StatsInterval:
// counters for Prometheus (metrics.go), and the last hour of key figures
// (StatsHistory samples) for the API's stats subresources, so the
// dashboard can draw graphs with no Prometheus installed. Whoever owns
// the figures keeps them: nothing of this goes to etcd.
const (
	DefaultStatsInterval = 10 * time.Second
	// StatsHistory is an hour at the default interval.
	StatsHistory = 360
)

type hostCounters struct {
	at                      time.Time
	cpu                     map[string]float64 // seconds by mode (/proc/stat)
	memTotal, memAvailable  int64
	disks                   map[string][2]uint64 // bytes read, written
	nets                    map[string][4]uint64 // rx bytes, tx bytes, rx packets, tx packets
	load1                   float64
	fsSize, fsAvail         int64
	cpus                    int
	busySeconds, allSeconds float64
}

// vmCounters are one VM's cumulative counters at one moment.
type vmCounters struct {
	at           time.Time
	name, tenant string
	vcpus        int
	memory       int64 // configured
	rss          int64
	vcpuSeconds  float64
	cpuSeconds   float64              // the whole QEMU process
	disks        map[string][4]uint64 // rd bytes, wr bytes, rd ops, wr ops
	nics         map[string][4]uint64 // as the guest sees it: rx bytes, tx bytes, rx packets, tx packets
}

// ring keeps the last StatsHistory samples.
type ring struct {
	buf  []api.StatsSample
	next int
	full bool
}

func (r *ring) add(s api.StatsSample) {
	if r.buf == nil {
		r.buf = make([]api.StatsSample, StatsHistory)
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

func (r *ring) samples() []api.StatsSample {
	if !r.full {
		return append([]api.StatsSample{}, r.buf[:r.next]...)
	}
	return append(append([]api.StatsSample{}, r.buf[r.next:]...), r.buf[:r.next]...)
}

// monitor samples the host and its VMs.
type monitor struct {
	a        *Agent
	interval time.Duration
	procRoot string // "/proc", or a test's copy
	sysRoot  string

	mu      sync.Mutex
	host    hostCounters
	hostH   ring
	vms     map[string]*vmCounters // by uid
	vmH     map[string]*ring
	vcpuTID map[string][]int // vCPU thread ids by uid, asked of QMP once per process
	vcpuPID map[string]int
	// noQMP is, by uid, the VM's process that had no QMP socket to ask
	// for disk figures: not asked again.
	noQMP map[string]int

	filesMu sync.Mutex // readHost's, as a test may sample beside run
	files   hostFiles
}

func newMonitor(a *Agent, interval time.Duration) *monitor {
	return &monitor{a: a, interval: interval, procRoot: "/proc", sysRoot: "/sys",
		vms: map[string]*vmCounters{}, vmH: map[string]*ring{}, vcpuTID: map[string][]int{}, vcpuPID: map[string]int{}, noQMP: map[string]int{}}
}

func (m *monitor) run(ctx context.Context) {
	defer func() {
		m.filesMu.Lock()
		m.files.close()
		m.filesMu.Unlock()
	}()
	m.sample(ctx)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample(ctx)
		}
	}
}

// sample reads every counter once and turns the change since the last
// sample into the history's rates.
func (m *monitor) sample(ctx context.Context) {
	now := time.Now()
	h := m.readHost(now)
	m.mu.Lock()
	prev := m.host
	m.host = h
	if !prev.at.IsZero() {
		m.hostH.add(hostSample(prev, h))
	}
	m.mu.Unlock()

	seen := map[string]bool{}
	for _, vm := range m.placedVMs() {
		uid := vm.Metadata.UID
		c, ok := m.readVM(ctx, vm, now)
		if !ok {
			continue
		}
		seen[uid] = true
		m.mu.Lock()
		if p := m.vms[uid]; p != nil {
			r := m.vmH[uid]
			if r == nil {
				r = &ring{}
				m.vmH[uid] = r
			}
			r.add(vmSample(p, c))
		}
		m.vms[uid] = c
		m.mu.Unlock()
	}
	m.mu.Lock()
	for uid := range m.vms {
		if !seen[uid] {
			// Stopped or gone: its counters start again with its next run,
			// and its history goes with it.
			delete(m.vms, uid)
			delete(m.vmH, uid)
			delete(m.vcpuTID, uid)
			delete(m.vcpuPID, uid)
			delete(m.noQMP, uid)
		}
	}
	m.mu.Unlock()
}

// placedVMs are the VMs the API places on this host.
func (m *monitor) placedVMs() []*api.VirtualMachine {
	if m.a.cache == nil {
		return nil
	}
	var out []*api.VirtualMachine
	for _, key := range m.a.cache.vms.Keys() {
		if o, ok := m.a.cache.vms.Get(key); ok {
			out = append(out, o.(*api.VirtualMachine))
		}
	}
	return out
}

func rate(d uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(d) / secs
}

// delta is b-a for counters that only grow; a counter that went back (a
// device made again) counts from zero.
func delta(a, b uint64) uint64 {
	if b < a {
		return b
	}
	return b - a
}

func hostSample(p, c hostCounters) api.StatsSample {
	secs := c.at.Sub(p.at).Seconds()
	s := api.StatsSample{Time: c.at.UTC(), Memory: c.memTotal - c.memAvailable}
	if all := c.allSeconds - p.allSeconds; all > 0 {
		s.CPU = 100 * (c.busySeconds - p.busySeconds) / all
	}
	for dev, now := range c.disks {
		was := p.disks[dev]
		s.DiskRead += rate(delta(was[0], now[0]), secs)
		s.DiskWrite += rate(delta(was[1], now[1]), secs)
	}
	for dev, now := range c.nets {
		was := p.nets[dev]
		s.NetRx += rate(delta(was[0], now[0]), secs)
		s.NetTx += rate(delta(was[1], now[1]), secs)
	}
	return s
}

func vmSample(p, c *vmCounters) api.StatsSample {
	secs := c.at.Sub(p.at).Seconds()
	s := api.StatsSample{Time: c.at.UTC(), Memory: c.rss}
	if secs > 0 && c.vcpus > 0 {
		s.CPU = 100 * (c.vcpuSeconds - p.vcpuSeconds) / secs / float64(c.vcpus)
	}
	for dev, now := range c.disks {
		was := p.disks[dev]
		s.DiskRead += rate(delta(was[0], now[0]), secs)
		s.DiskWrite += rate(delta(was[1], now[1]), secs)
	}
	for dev, now := range c.nics {
		was := p.nics[dev]
		s.NetRx += rate(delta(was[0], now[0]), secs)
		s.NetTx += rate(delta(was[1], now[1]), secs)
	}
	return s
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

// hostFiles are what readHost keeps between samples: the files it reads
// each time, kept open, and what it learned of the devices they name.
type hostFiles struct {
	stat, meminfo, loadavg, diskstats, netdev procFile
	// disks says, by name, whether a device of /proc/diskstats is a
	// whole disk to count (one of /sys/block, not a loop, RAM or zram
	// one), and nets whether an interface of /proc/net/dev is the
	// host's own (not loopback, nor a tun or tap device); each is asked
	// of /sys once, when the name appears. A name gone from its file is
	// forgotten, so one that comes back (a device made again) is looked
	// at again.
	disks, nets map[string]*deviceKind
	sample      uint64
	f           [][]byte
}

type deviceKind struct {
	name string
	use  bool
	seen uint64 // the sample that last listed it
}

func (h *hostFiles) init(procRoot string) {
	if h.disks != nil {
		return
	}
	h.stat.path = filepath.Join(procRoot, "stat")
	h.meminfo.path = filepath.Join(procRoot, "meminfo")
	h.loadavg.path = filepath.Join(procRoot, "loadavg")
	h.diskstats.path = filepath.Join(procRoot, "diskstats")
	h.netdev.path = filepath.Join(procRoot, "net", "dev")
	h.disks, h.nets = map[string]*deviceKind{}, map[string]*deviceKind{}
}

func (h *hostFiles) close() {
	for _, f := range []*procFile{&h.stat, &h.meminfo, &h.loadavg, &h.diskstats, &h.netdev} {
		f.close()
	}
}

// kind finds name in known, asking use the first time, and marks it seen.
func (h *hostFiles) kind(known map[string]*deviceKind, name []byte, use func(string) bool) *deviceKind {
	k := known[string(name)]
	if k == nil {
		n := string(name)
		k = &deviceKind{name: n, use: use(n)}
		known[n] = k
	}
	k.seen = h.sample
	return k
}

func (h *hostFiles) forgetUnseen(known map[string]*deviceKind) {
	for n, k := range known {
		if k.seen != h.sample {
			delete(known, n)
		}
	}
}

// hostCPUModes are /proc/stat's CPU times in the order it lists them.
var hostCPUModes = [...]string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}

func (m *monitor) readHost(now time.Time) hostCounters {
	h := hostCounters{at: now, cpu: make(map[string]float64, len(hostCPUModes)), disks: map[string][2]uint64{}, nets: map[string][4]uint64{}, cpus: runtime.NumCPU()}
	m.filesMu.Lock()
	defer m.filesMu.Unlock()
	hf := &m.files
	hf.init(m.procRoot)
	hf.sample++
	if data, err := hf.stat.read(); err == nil {
		line, _ := nextLine(data)
		hf.f = fields(hf.f, line)
		if len(hf.f) > 0 && string(hf.f[0]) == "cpu" {
			for i, mode := range hostCPUModes {
				if i+1 >= len(hf.f) {
					break
				}
				v := float64(parseUint(hf.f[i+1])) / clockTicks
				h.cpu[mode] = v
				h.allSeconds += v
				if mode != "idle" && mode != "iowait" {
					h.busySeconds += v
				}
			}
		}
	}
	if data, err := hf.meminfo.read(); err == nil {
		for len(data) > 0 {
			var line []byte
			line, data = nextLine(data)
			hf.f = fields(hf.f, line)
			if len(hf.f) < 2 {
				continue
			}
			switch string(hf.f[0]) {
			case "MemTotal:":
				h.memTotal = int64(parseUint(hf.f[1])) << 10
			case "MemAvailable:":
				h.memAvailable = int64(parseUint(hf.f[1])) << 10
			}
		}
	}
	if data, err := hf.loadavg.read(); err == nil {
		if hf.f = fields(hf.f, data); len(hf.f) > 0 {
			h.load1 = parseFloat(hf.f[0])
		}
	}
	// Whole disks only (those of /sys/block), not partitions, loops or
	// RAM disks, so nothing is counted twice. /proc/diskstats holds the
	// counters of /sys/block/*/stat, three columns (major, minor, name)
	// further right.
	if data, err := hf.diskstats.read(); err == nil {
		for len(data) > 0 {
			var line []byte
			line, data = nextLine(data)
			hf.f = fields(hf.f, line)
			if len(hf.f) < 10 {
				continue
			}
			k := hf.kind(hf.disks, hf.f[2], func(dev string) bool {
				if strings.HasPrefix(dev, "loop") || strings.HasPrefix(dev, "ram") || strings.HasPrefix(dev, "zram") {
					return false
				}
				// /sys/block names a/b (cciss/c0d0) a!b.
				_, err := os.Stat(filepath.Join(m.sysRoot, "block", strings.ReplaceAll(dev, "/", "!")))
				return err == nil
			})
			if k.use {
				h.disks[k.name] = [2]uint64{parseUint(hf.f[5]) * 512, parseUint(hf.f[9]) * 512}
			}
		}
		hf.forgetUnseen(hf.disks)
	}
	// Network: the host's own interfaces, not loopback, and not tun or
	// tap devices (the VMs' taps, which the VMs' figures count).
	if data, err := hf.netdev.read(); err == nil {
		eachNetDev(data, &hf.f, func(name []byte, c [4]uint64) {
			k := hf.kind(hf.nets, name, func(dev string) bool {
				_, err := os.Stat(filepath.Join(m.sysRoot, "class", "net", dev, "tun_flags"))
				return dev != "lo" && err != nil
			})
			if k.use {
				h.nets[k.name] = c
			}
		})
		hf.forgetUnseen(hf.nets)
	}
	var st unix.Statfs_t
	if unix.Statfs(m.a.cfg.DataDir, &st) == nil {
		h.fsSize = int64(st.Blocks) * st.Bsize
		h.fsAvail = int64(st.Bavail) * st.Bsize
	}
	return h
}

// eachNetDev calls fn with each interface of /proc/net/dev's contents and
// its rx bytes, tx bytes, rx packets and tx packets; f is scratch.
func eachNetDev(data []byte, f *[][]byte, fn func(name []byte, c [4]uint64)) {
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			continue
		}
		*f = fields(*f, line[i+1:])
		if len(*f) < 10 {
			continue
		}
		n := func(i int) uint64 { return parseUint((*f)[i]) }
		fn(bytes.TrimSpace(line[:i]), [4]uint64{n(0), n(8), n(1), n(9)})
	}
}

// readVM reads a running VM's counters: vCPU time and memory from /proc,
// disk I/O from QEMU (QMP query-blockstats), NIC counters from its taps.
// ok is false when the VM has no process here.
func (m *monitor) readVM(ctx context.Context, vm *api.VirtualMachine, now time.Time) (*vmCounters, bool) {
	uid := vm.Metadata.UID
	dir := filepath.Join(m.a.cfg.DataDir, "vms", uid)
	info, ok, err := m.a.cfg.Driver.Lookup(ctx, uid, dir)
	if err != nil || !ok || info.PID <= 0 {
		return nil, false
	}
	c := &vmCounters{at: now, name: vm.Metadata.Name, tenant: vm.Metadata.Tenant, vcpus: vm.Spec.CPUs, memory: int64(vm.Spec.Memory),
		disks: map[string][4]uint64{}, nics: map[string][4]uint64{}}
	if c.vcpus < 1 {
		c.vcpus = 1
	}
	c.cpuSeconds = m.taskSeconds(fmt.Sprintf("%d/stat", info.PID))
	if data, err := os.ReadFile(filepath.Join(m.procRoot, strconv.Itoa(info.PID), "status")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				c.rss = kb << 10
			}
		}
	}
	m.mu.Lock()
	noQMP := m.noQMP[uid] == info.PID
	m.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var qmp *compute.QMPClient
	if !noQMP {
		qmp, err = compute.DialQMP(qctx, filepath.Join(dir, compute.QMPSocket))
		if errors.Is(err, fs.ErrNotExist) {
			// QEMU makes its control socket as it starts: a process
			// without one (a simulated host's) never has one.
			m.mu.Lock()
			m.noQMP[uid] = info.PID
			m.mu.Unlock()
		}
	}
	if qmp != nil {
		defer qmp.Close()
		m.mu.Lock()
		known := m.vcpuPID[uid] == info.PID
		m.mu.Unlock()
		if !known {
			var cpus []struct {
				ThreadID int `json:"thread-id"`
			}
			if qmp.Execute(qctx, "query-cpus-fast", nil, &cpus) == nil {
				var tids []int
				for _, cpu := range cpus {
					tids = append(tids, cpu.ThreadID)
				}
				m.mu.Lock()
				m.vcpuTID[uid], m.vcpuPID[uid] = tids, info.PID
				m.mu.Unlock()
			}
		}
		var blocks []struct {
			Device string `json:"device"`
			QDev   string `json:"qdev"`
			Stats  struct {
				RdBytes uint64 `json:"rd_bytes"`
				WrBytes uint64 `json:"wr_bytes"`
				RdOps   uint64 `json:"rd_operations"`
				WrOps   uint64 `json:"wr_operations"`
			} `json:"stats"`
		}
		if qmp.Execute(qctx, "query-blockstats", nil, &blocks) == nil {
			for _, b := range blocks {
				name := b.Device
				if name == "" {
					name = b.QDev
				}
				if name == "" {
					continue
				}
				c.disks[name] = [4]uint64{b.Stats.RdBytes, b.Stats.WrBytes, b.Stats.RdOps, b.Stats.WrOps}
			}
		}
	}
	m.mu.Lock()
	tids := m.vcpuTID[uid]
	m.mu.Unlock()
	if len(tids) > 0 {
		for _, tid := range tids {
			c.vcpuSeconds += m.taskSeconds(fmt.Sprintf("%d/task/%d/stat", info.PID, tid))
		}
		c.vcpus = len(tids)
	} else {
		c.vcpuSeconds = c.cpuSeconds // no QMP answer: the whole process
	}
	// A tap's receive is what the guest sent, and its transmit what the
	// guest received.
	for i, tap := range m.a.startedTaps(dir) {
		st := filepath.Join(m.sysRoot, "class", "net", tap, "statistics")
		n := func(f string) uint64 {
			data, _ := os.ReadFile(filepath.Join(st, f))
			v, _ := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
			return v
		}
		if _, err := os.Stat(st); err != nil {
			continue
		}
		c.nics["nic"+strconv.Itoa(i)] = [4]uint64{n("tx_bytes"), n("rx_bytes"), n("tx_packets"), n("rx_packets")}
	}
	return c, true
}

// taskSeconds is a process's or thread's user and system CPU time.
func (m *monitor) taskSeconds(rel string) float64 {
	data, err := os.ReadFile(filepath.Join(m.procRoot, rel))
	if err != nil {
		return 0
	}
	// "pid (comm) state ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// startedTaps are the tap devices the VM was started with, in NIC order.
func (a *Agent) startedTaps(dir string) []string {
	s, ok := a.specs.read(dir)
	if !ok {
		return nil
	}
	var taps []string
	for _, n := range s.NICs {
		taps = append(taps, n.Tap)
	}
	return taps
}

// endpoint is what the agent serves the API server over mutual TLS: the
// consoles and logs (package console) and the stats history. Only the API
// server reaches it, and it authorizes people first.
//
//	GET /v1/stats/host
//	GET /v1/vms/{uid}/stats
func (a *Agent) endpoint() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stats/host", a.mon.serveHost)
	mux.HandleFunc("GET /v1/vms/{uid}/stats", a.mon.serveVM)
	mux.Handle("/", console.Handler(a.vmDir))
	return mux
}

func (m *monitor) serveHost(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	st := api.Stats{Kind: "Stats", Object: "Host/" + m.a.cfg.Name, Interval: m.interval.String(), Samples: m.hostH.samples()}
	m.mu.Unlock()
	writeStats(w, st)
}

func (m *monitor) serveVM(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	if _, ok := m.a.vmDir(uid); !ok {
		writeStatus(w, &api.Status{Kind: "Status", Code: http.StatusNotFound, Reason: api.ReasonNotFound,
			Message: "no VM with uid " + uid + " on this host: the agent has not set it up yet, or it was deleted"})
		return
	}
	m.mu.Lock()
	st := api.Stats{Kind: "Stats", Object: "VirtualMachine/" + uid, Interval: m.interval.String(), Samples: []api.StatsSample{}}
	if r := m.vmH[uid]; r != nil {
		st.Samples = r.samples()
	}
	m.mu.Unlock()
	writeStats(w, st)
}

func writeStats(w http.ResponseWriter, st api.Stats) {
	if st.Samples == nil {
		st.Samples = []api.StatsSample{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(st)
}

func writeStatus(w http.ResponseWriter, st *api.Status) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st.Code)
	_ = json.NewEncoder(w).Encode(st)
}
