package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
)

// powerPlug is the smart plug of the machine h1 runs on: its off call
// cuts h1's power, which here kills every QEMU under h1's data directory
// (frozen ones too).
type powerPlug struct {
	dataDir string

	mu    sync.Mutex
	off   bool
	offAt time.Time
}

func (p *powerPlug) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.URL.Path {
	case "/off":
		if !p.off {
			killVMs(p.dataDir)
			p.off, p.offAt = true, time.Now()
		}
	case "/on":
		p.off = false
	case "/status":
		fmt.Fprintf(w, `{"output": %v}`, !p.off)
	}
}

// qemuWriters counts the QEMU processes that have the volume image open
// (its name is on their command line): running or frozen, each could
// write to it.
func qemuWriters(image string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmd, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(cmd), image) || !strings.Contains(string(cmd), "qemu-system") {
			continue
		}
		// A zombie has exited: it writes nothing.
		if st, err := os.ReadFile(filepath.Join(d, "stat")); err == nil {
			if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		var pid int
		fmt.Sscan(filepath.Base(d), &pid)
		pids = append(pids, pid)
	}
	return pids
}

// TestHAFailoverRBD: a highly available VM on an RBD volume whose
// host dies (its agent stopped, its QEMU frozen, as a hung machine's
// would be) comes back on another host, after the failover controller
// powered the dead host's Machine off through its power driver; the
// disk never had two QEMUs on it at once, and the guest on the new host
// reads what it wrote on the old one.
func TestHAFailoverRBD(t *testing.T) {
	requireSharedBoot(t)
	testHighAvailability(t, rbdPool)
}

// TestHAFailoverNFS is TestHAFailoverRBD on an NFS share.
func TestHAFailoverNFS(t *testing.T) {
	requireSharedBoot(t)
	testHighAvailability(t, nfsPool)
}

func testHighAvailability(t *testing.T, makePool func(*testing.T, *lab) sharedPool) {
	l := newLab(t)
	p := makePool(t, l)
	l.addAgent(t, "h2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	plug := &powerPlug{dataDir: l.dataDir}
	srv := httptest.NewServer(plug)
	defer srv.Close()
	l.create(t, &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "h1-box"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:01:01", Power: api.MachinePower{Driver: api.PowerDriverWebhook, Webhook: &api.PowerWebhook{
			OnURL: srv.URL + "/on", OffURL: srv.URL + "/off", StatusURL: srv.URL + "/status", StatusOnMatch: `"output": true`}}}})
	const lease = 5
	if _, err := l.env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"machine": "h1-box", "leaseSeconds": lease}}, false); err != nil {
		t.Fatal(err)
	}

	vol := volume("data", 64<<20, api.VolumeSource{})
	vol.Spec.Host, vol.Spec.Pool = "", p.pool.Metadata.Name
	l.create(t, vol)
	token := randomName("gen-")
	vm := l.vm("keeper")
	vm.Spec.Disks = []api.VMDisk{{Volume: "data"}}
	vm.Spec.HighAvailability = true
	vm.Spec.CloudInit.UserData = markerScript(token)
	l.create(t, vm)
	m := l.markers(t, "keeper")
	if got := m["disk-written"]; len(got) != 1 || got[0] != token {
		t.Fatalf("first boot, on h1: wrote %q, want %q", got, token)
	}
	first := l.get(t, "keeper")
	if first.Status.Host != "h1" {
		t.Fatalf("VM runs on %q, want h1", first.Status.Host)
	}
	if c := first.Status.Condition(api.ConditionHighAvailability); c == nil || c.Reason != api.ReasonHAProtected {
		t.Errorf("HighAvailability %+v, want Protected", c)
	}
	image := "hearth-vol-" + l.waitVolume(t, "data", func(*api.Volume) error { return nil }).Metadata.UID

	// Watch the disk's writers from now on.
	var (
		wmu     sync.Mutex
		most    int
		overlap []int
	)
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sctx.Err() == nil {
			pids := qemuWriters(image)
			wmu.Lock()
			if len(pids) > most {
				most = len(pids)
			}
			if len(pids) > 1 {
				overlap = pids
			}
			wmu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if n := len(qemuWriters(image)); n != 1 {
		t.Fatalf("%d QEMU processes have %s open before the loss, want 1 (is the sampler looking at the right thing?)", n, image)
	}

	// h1 dies: its agent stops renewing, and its QEMU hangs.
	died := time.Now()
	l.stopAgent()
	if err := syscall.Kill(first.Status.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var moved *api.VirtualMachine
	servertest.Eventually(t, 5*time.Minute, func() error {
		moved = l.get(t, "keeper")
		if moved.Spec.Host == "h1" || moved.Status.Host != moved.Spec.Host || moved.Status.Phase != api.VMRunning {
			return fmt.Errorf("VM bound to %q, runs on %q, phase %q, HighAvailability %+v", moved.Spec.Host, moved.Status.Host, moved.Status.Phase,
				moved.Status.Condition(api.ConditionHighAvailability))
		}
		return nil
	})
	running := time.Since(died)
	t.Logf("HA: from h1's death to the VM Running on %s: %s (lease %ds)", moved.Spec.Host, running.Round(100*time.Millisecond), lease)
	if moved.Spec.Host != "h2" {
		t.Fatalf("VM restarted on %q, want h2", moved.Spec.Host)
	}
	m = l.markers(t, "keeper")
	if got := m["disk-marker"]; len(got) != 1 || got[0] != token {
		t.Errorf("second boot, on h2: the disk held %q, want %q written on h1", got, token)
	}
	stopSampling()
	<-sampled

	plug.mu.Lock()
	off, offAt := plug.off, plug.offAt
	plug.mu.Unlock()
	if !off {
		t.Fatalf("the VM was restarted on h2, but h1's machine was never powered off")
	}
	if alive(first.Status.PID) {
		t.Errorf("h1's QEMU (pid %d) still exists", first.Status.PID)
	}
	if moved.Status.StartedAt != nil && moved.Status.StartedAt.Before(offAt.Truncate(time.Second)) {
		t.Errorf("the VM started on h2 at %s, before h1 was powered off at %s", moved.Status.StartedAt, offAt)
	}
	wmu.Lock()
	if most > 1 {
		t.Errorf("the disk had %d QEMU processes on it at once (pids %v): two writers", most, overlap)
	}
	wmu.Unlock()

	var steps []string
	servertest.Eventually(t, 30*time.Second, func() error {
		evs, _, err := l.env.Admin.List(ctx, "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.kind=VirtualMachine,involvedObject.name=keeper"})
		if err != nil {
			return err
		}
		// Oldest first: the recorder writes one object's events in
		// order, stamped to the millisecond.
		sort.SliceStable(evs, func(i, j int) bool {
			return evs[i].(*api.Event).Spec.FirstTimestamp.Before(*evs[j].(*api.Event).Spec.FirstTimestamp)
		})
		steps = steps[:0]
		for _, e := range evs {
			switch r := e.(*api.Event).Spec.Reason; r {
			case api.ReasonHostLost, api.ReasonFencing, api.ReasonFenced, api.ReasonRestarting, api.ReasonRestarted:
				steps = append(steps, r)
			}
		}
		if want := "HostLost,Fencing,Fenced,Restarting,Restarted"; strings.Join(steps, ",") != want {
			return fmt.Errorf("events %v, want %s", steps, want)
		}
		return nil
	})
}

// writerScript is the guest's user-data for the storage fence test. On
// its first boot (nothing at markerOffset) the guest keeps writing
// "first-N" there, flushed, twice a second. On a later boot it writes
// "second" once, flushed, and then prints what the disk holds (read past
// its own cache) twice a second: a writer elsewhere that still reached
// the disk would show.
const writerScript = `#!/bin/sh
at=` + "98304" + `
have=$(dd if=/dev/vda bs=512 skip=$at count=1 iflag=direct 2>/dev/null | tr -d '\000' | head -c 64)
echo "HEARTH-GUEST disk-marker=${have:-none}"
if [ -z "$have" ]; then
	(
	i=0
	while :; do
		i=$((i+1))
		printf 'first-%s' $i | dd of=/dev/vda bs=512 seek=$at conv=notrunc,sync,fsync 2>/dev/null
		echo "HEARTH-GUEST wrote=first-$i" >/dev/ttyS0
		sleep 0.5
	done
	) </dev/null >/dev/null 2>&1 &
else
	printf 'second' | dd of=/dev/vda bs=512 seek=$at conv=notrunc,sync,fsync 2>/dev/null
	echo "HEARTH-GUEST disk-written=second"
	(
	while :; do
		v=$(dd if=/dev/vda bs=512 skip=$at count=1 iflag=direct 2>/dev/null | tr -d '\000' | head -c 64)
		echo "HEARTH-GUEST seen=$v" >/dev/ttyS0
		sleep 0.5
	done
	) </dev/null >/dev/null 2>&1 &
fi
`

// TestHAStorageFenceRBD: a highly available VM on an RBD volume whose
// host is lost and that no power driver can switch off is restarted on
// another host whose agent first has Ceph blocklist the old QEMU. The
// old host's agent dies but its QEMU runs on, its guest writing to the
// disk twice a second (a host cut off from the control plane but not
// from Ceph: the case where librbd's exclusive lock alone would hand the
// disk back and forth between the two QEMUs). Once the new guest has
// written, it reads only its own write back, for seconds: the old QEMU
// writes nothing more.
func TestHAStorageFenceRBD(t *testing.T) {
	requireSharedBoot(t)
	l := newLab(t)
	p := rbdPool(t, l)
	l.addAgent(t, "h2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := l.env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"leaseSeconds": 5}}, false); err != nil {
		t.Fatal(err)
	}
	vol := volume("data", 64<<20, api.VolumeSource{})
	vol.Spec.Host, vol.Spec.Pool = "", p.pool.Metadata.Name
	l.create(t, vol)
	vm := l.vm("keeper")
	vm.Spec.Disks = []api.VMDisk{{Volume: "data"}}
	vm.Spec.HighAvailability = true
	vm.Spec.CloudInit.UserData = writerScript
	l.create(t, vm)
	var first *api.VirtualMachine
	servertest.Eventually(t, 4*time.Minute, func() error {
		first = l.get(t, "keeper")
		data, _ := os.ReadFile(first.Status.ConsoleLog)
		if n := strings.Count(string(data), "HEARTH-GUEST wrote=first-"); n < 3 {
			return fmt.Errorf("the guest has written %d times so far (phase %q)", n, first.Status.Phase)
		}
		return nil
	})
	if c := first.Status.Condition(api.ConditionHighAvailability); c == nil || c.Reason != api.ReasonHAProtected || !strings.Contains(c.Message, "Ceph") {
		t.Errorf("HighAvailability %+v, want Protected by Ceph", c)
	}

	// h1 is lost: its agent stops; its QEMU runs on, writing.
	died := time.Now()
	l.stopAgent()
	t.Cleanup(func() { syscall.Kill(first.Status.PID, syscall.SIGKILL) })
	var moved *api.VirtualMachine
	servertest.Eventually(t, 5*time.Minute, func() error {
		moved = l.get(t, "keeper")
		if moved.Status.Host != "h2" || moved.Status.Phase != api.VMRunning {
			return fmt.Errorf("VM bound to %q, runs on %q, phase %q", moved.Spec.Host, moved.Status.Host, moved.Status.Phase)
		}
		return nil
	})
	t.Logf("HA: from h1's loss to the VM Running on h2: %s (lease 5s, fenced at the storage)", time.Since(died).Round(100*time.Millisecond))
	servertest.Eventually(t, 5*time.Minute, func() error {
		moved = l.get(t, "keeper")
		data, _ := os.ReadFile(moved.Status.ConsoleLog)
		if moved.Status.Host != "h2" || !strings.Contains(string(data), "HEARTH-GUEST seen=second") {
			return fmt.Errorf("VM bound to %q, runs on %q, phase %q, HighAvailability %+v", moved.Spec.Host, moved.Status.Host, moved.Status.Phase,
				moved.Status.Condition(api.ConditionHighAvailability))
		}
		return nil
	})
	if !alive(first.Status.PID) {
		t.Fatalf("h1's QEMU is gone: the test needs it running")
	}
	time.Sleep(8 * time.Second)
	data, _ := os.ReadFile(moved.Status.ConsoleLog)
	var seen []string
	for _, line := range strings.Split(string(data), "\n") {
		if _, v, ok := strings.Cut(line, "HEARTH-GUEST seen="); ok {
			seen = append(seen, strings.TrimSpace(v))
		}
	}
	t.Logf("h2's guest read its disk %d times since its write", len(seen))
	for _, v := range seen {
		if v != "second" {
			t.Fatalf("h2's guest read %q from its disk: the old QEMU on h1 wrote after the failover: two writers (reads: %v)", v, seen)
		}
	}
	old, _ := os.ReadFile(first.Status.ConsoleLog)
	t.Logf("h1's guest printed %d writes in all", strings.Count(string(old), "HEARTH-GUEST wrote=first-"))

	servertest.Eventually(t, 30*time.Second, func() error {
		evs, _, err := l.env.Admin.List(ctx, "Event", "lab", client.ListOptions{FieldSelector: "involvedObject.kind=VirtualMachine,involvedObject.name=keeper"})
		if err != nil {
			return err
		}
		sort.SliceStable(evs, func(i, j int) bool {
			return evs[i].(*api.Event).Spec.FirstTimestamp.Before(*evs[j].(*api.Event).Spec.FirstTimestamp)
		})
		var steps []string
		for _, e := range evs {
			switch r := e.(*api.Event).Spec.Reason; r {
			case api.ReasonHostLost, api.ReasonFencing, api.ReasonFenced, api.ReasonRestarting, api.ReasonRestarted:
				steps = append(steps, r)
			}
		}
		if want := "HostLost,Fencing,Restarting,Fenced,Restarted"; strings.Join(steps, ",") != want {
			return fmt.Errorf("events %v, want %s", steps, want)
		}
		return nil
	})
}
