package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestReadHostFiles: the host's counters come from a test's copy of
// /proc and /sys as they would from the real ones, and a sample sees
// what changed since the last one although the files stay open: new
// counts, a disk or an interface that appeared (asked of /sys once) or
// went, and a file that outgrew the buffer.
func TestReadHostFiles(t *testing.T) {
	root := t.TempDir()
	proc, sys := filepath.Join(root, "proc"), filepath.Join(root, "sys")
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		// In place, as the kernel's files change: the open file sees it.
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(rel string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	netDev := func(lines ...string) string {
		return "Inter-|   Receive                                                |  Transmit\n" +
			" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n" +
			strings.Join(lines, "\n") + "\n"
	}
	write("proc/stat", "cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 100 0 50 800 10 0 0 0 0 0\nintr 1\n")
	write("proc/meminfo", "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     400 kB\n")
	write("proc/loadavg", "0.50 0.40 0.30 1/100 1234\n")
	write("proc/diskstats", "   7       0 loop0 1 0 8 0 1 0 8 0 0 0 0\n 253       0 vda 10 0 100 0 20 0 200 0 0 0 0\n 253       1 vda1 10 0 100 0 20 0 200 0 0 0 0\n")
	mkdir("sys/block/vda")
	mkdir("sys/block/loop0")
	write("proc/net/dev", netDev(
		"    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0",
		"  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0",
		"  tap0: 3000 30 0 0 0 0 0 0 4000 40 0 0 0 0 0 0"))
	write("sys/class/net/tap0/tun_flags", "0x1002\n")

	m := newMonitor(&Agent{cfg: Config{DataDir: root}}, time.Second)
	m.procRoot, m.sysRoot = proc, sys
	defer m.files.close()
	check := func(what string, h hostCounters, cpuUser, memUsed int64, load float64, disks map[string][2]uint64, nets map[string][4]uint64) {
		t.Helper()
		if h.cpu["user"] != float64(cpuUser) || h.memTotal-h.memAvailable != memUsed || h.load1 != load {
			t.Errorf("%s: user %v s, memory used %d, load %v; want %d, %d, %v", what, h.cpu["user"], h.memTotal-h.memAvailable, h.load1, cpuUser, memUsed, load)
		}
		if !reflect.DeepEqual(h.disks, disks) {
			t.Errorf("%s: disks %v, want %v", what, h.disks, disks)
		}
		if !reflect.DeepEqual(h.nets, nets) {
			t.Errorf("%s: interfaces %v, want %v", what, h.nets, nets)
		}
	}
	h := m.readHost(time.Now())
	check("first", h, 1, 600<<10, 0.5, map[string][2]uint64{"vda": {100 * 512, 200 * 512}}, map[string][4]uint64{"eth0": {1000, 2000, 10, 20}})
	if h.allSeconds != 9.6 || h.busySeconds != 1.5 {
		t.Errorf("CPU seconds: all %v, busy %v; want 9.6 and 1.5", h.allSeconds, h.busySeconds)
	}

	// Everything moves; a disk and an interface come, one interface goes;
	// meminfo grows past the buffer.
	write("proc/stat", "cpu  300 0 50 900 10 0 0 0 0 0\n")
	var pad strings.Builder
	for i := range 300 {
		fmt.Fprintf(&pad, "Padding%d:        1 kB\n", i)
	}
	write("proc/meminfo", "MemTotal:        1000 kB\n"+pad.String()+"MemAvailable:     100 kB\n")
	write("proc/loadavg", "1.25 0.40 0.30 1/100 1234\n")
	write("proc/diskstats", " 253       0 vda 11 0 150 0 21 0 260 0 0 0 0\n   8      16 sdb 1 0 4 0 1 0 6 0 0 0 0\n")
	mkdir("sys/block/sdb")
	write("proc/net/dev", netDev(
		"  tap0: 3000 30 0 0 0 0 0 0 4000 40 0 0 0 0 0 0",
		"  eth1: 7 1 0 0 0 0 0 0 8 2 0 0 0 0 0 0"))
	h = m.readHost(time.Now())
	check("second", h, 3, 900<<10, 1.25, map[string][2]uint64{"vda": {150 * 512, 260 * 512}, "sdb": {4 * 512, 6 * 512}}, map[string][4]uint64{"eth1": {7, 8, 1, 2}})
	if _, ok := m.files.nets["eth0"]; ok {
		t.Error("eth0, gone from /proc/net/dev, is still remembered")
	}
	if _, ok := m.files.disks["vda1"]; ok {
		t.Error("vda1, gone from /proc/diskstats, is still remembered")
	}

	// eth0 comes back as a tap: asked of /sys again.
	write("sys/class/net/eth0/tun_flags", "0x1002\n")
	write("proc/net/dev", netDev("  eth0: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0", "  eth1: 9 1 0 0 0 0 0 0 8 2 0 0 0 0 0 0"))
	h = m.readHost(time.Now())
	if want := map[string][4]uint64{"eth1": {9, 8, 1, 2}}; !reflect.DeepEqual(h.nets, want) {
		t.Errorf("third: interfaces %v, want %v", h.nets, want)
	}
}

// TestProcFileReadsAfresh: a /proc file kept open and read from its
// start again gives the kernel's new contents, not the first read's.
func TestProcFileReadsAfresh(t *testing.T) {
	p := procFile{path: "/proc/stat"}
	defer p.close()
	total := func() uint64 {
		data, err := p.read()
		if err != nil {
			t.Fatal(err)
		}
		line, _ := nextLine(data)
		var sum uint64
		for _, f := range fields(nil, line)[1:] {
			sum += parseUint(f)
		}
		return sum
	}
	first := total()
	time.Sleep(100 * time.Millisecond) // ten ticks of USER_HZ, on every CPU
	if second := total(); second <= first {
		t.Errorf("/proc/stat's CPU times read %d, then %d 100ms later", first, second)
	}
}
