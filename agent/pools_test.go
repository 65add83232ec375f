package agent_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/storage"
	"hearth.dev/hearth/storage/cephtest"
	"hearth.dev/hearth/storage/nfstest"
	"hearth.dev/hearth/testguest"
)

// TestMain stops the shared-storage peers (one Ceph, one NFS server for
// the whole package: Ceph takes about 30 s to start) once every test is
// done.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, stop := range []func() error{cephtest.Stop, nfstest.Stop} {
		if err := stop(); err != nil {
			os.Stderr.WriteString("stopping test peers: " + err.Error() + "\n")
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// addAgent starts another agent, host name, against the lab's server,
// with the lab's options, and waits for its Host to be Ready.
func (l *lab) addAgent(t *testing.T, name string) (dataDir string) {
	t.Helper()
	dataDir, _ = l.addStoppableAgent(t, name)
	return dataDir
}

// addStoppableAgent is addAgent, with a stop that ends the agent as a
// host that dies would (its VMs stay; its lease runs out).
func (l *lab) addStoppableAgent(t *testing.T, name string) (dataDir string, stop func()) {
	t.Helper()
	dataDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	join := l.env.JoinToken(api.TokenRequest{TTL: "1h"}).Token
	cfg := agent.Config{Server: l.env.Server.URL(), JoinToken: join, CAFile: filepath.Join(l.env.DataDir, "ca.crt"),
		Name: name, DataDir: dataDir, Address: "127.0.0.1", Listen: fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)),
		ShutdownTimeout: 5 * time.Second, Resync: 2 * time.Second}
	for _, o := range l.opts {
		o(&cfg)
	}
	go func() { done <- agent.Run(ctx, cfg) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(func() {
		stop()
		killVMs(dataDir)
	})
	servertest.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("agent %s stopped: %v", name, err)
		default:
		}
		h, err := l.env.Admin.Get(servertest.Ctx(t), "Host", "", name)
		if err != nil {
			return err
		}
		if h.CommonStatus().Phase != api.HostReady {
			return fmt.Errorf("host %s is %q", name, h.CommonStatus().Phase)
		}
		return nil
	})
	return dataDir, stop
}

// bootDiskImage makes the shared Image "bootdisk": a disk that boots the
// test guest, under a directory the agents may read file:// images from.
func bootDiskImage(t *testing.T, l *lab, dir string) {
	t.Helper()
	for tool, pkg := range map[string]string{"genisoimage": "genisoimage", "isohybrid": "syslinux-utils"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install Debian's %s to make the test guest's boot disk", tool, pkg)
		}
	}
	path, err := testguest.BootDisk(servertest.Ctx(t), l.guest, dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l.create(t, &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"}, Metadata: api.ObjectMeta{Name: "bootdisk"},
		Spec: api.ImageSpec{Format: api.FormatRaw, Source: api.ImageSource{URL: "file://" + path, Checksum: checksumOf(data)}}})
}

// markerOffset is where on its disk the guest writes its marker: past the
// end of the boot image, in the part of the volume the clone added.
const markerOffset = 48 << 20

// markerScript is the guest's user-data: print what is at markerOffset,
// then write token there and flush it to the disk (fsync: a flush QEMU
// passes on, so the token is in the pool even if QEMU dies next).
func markerScript(token string) string {
	sector := markerOffset / 512
	return fmt.Sprintf(`#!/bin/sh
have=$(dd if=/dev/vda bs=512 skip=%[1]d count=1 2>/dev/null | tr -d '\000' | head -c 64)
echo "HEARTH-GUEST disk-marker=${have:-none}"
printf '%%s' '%[2]s' | dd of=/dev/vda bs=512 seek=%[1]d conv=notrunc,sync,fsync 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
again=$(dd if=/dev/vda bs=512 skip=%[1]d count=1 2>/dev/null | tr -d '\000' | head -c 64)
echo "HEARTH-GUEST disk-written=$again"
`, sector, token)
}

// diskVM is a VM on host that boots from its one disk, the volume vol,
// and runs script.
func diskVM(name, host, vol, script string) *api.VirtualMachine {
	return &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
		Metadata: api.ObjectMeta{Name: name, Tenant: "lab"},
		Spec: api.VirtualMachineSpec{Host: host, CPUs: 1, Memory: 256 << 20, Boot: api.VMBoot{From: api.BootFromDisk},
			Disks: []api.VMDisk{{Volume: vol}}, CloudInit: api.CloudInit{UserData: script}}}
}

// markers waits for the VM's user-data script to finish and returns the
// markers its console shows.
func (l *lab) markers(t *testing.T, name string) map[string][]string {
	t.Helper()
	var m map[string][]string
	servertest.Eventually(t, 5*time.Minute, func() error {
		vm := l.get(t, name)
		if vm.Status.ConsoleLog == "" {
			return fmt.Errorf("no console log yet (phase %q, conditions %+v)", vm.Status.Phase, vm.Status.Conditions)
		}
		data, _ := os.ReadFile(vm.Status.ConsoleLog)
		m = testguest.ParseMarkers(string(data))
		if _, ok := m["script-exit"]; !ok {
			return fmt.Errorf("the guest's script has not finished:\n%s", tail(string(data)))
		}
		return nil
	})
	return m
}

// sharedPool is a StoragePool of the shared peers and a driver of it as
// the test sees it, to check what is in the pool.
type sharedPool struct {
	pool   *api.StoragePool
	driver storage.Driver
	key    string // the rbd user's key, "" for nfs
}

func rbdPool(t *testing.T, l *lab) sharedPool {
	t.Helper()
	c := cephtest.Start(t)
	ctx := servertest.Ctx(t)
	user := randomName("hearth-")
	key, err := c.AddUser(ctx, user, c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	secret := randomName("ceph-key-")
	l.create(t, &api.Secret{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Secret"}, Metadata: api.ObjectMeta{Name: secret},
		Spec: api.SecretSpec{Data: map[string][]byte{"keyring": []byte("[client." + user + "]\n\tkey = " + key + "\n")}}})
	pool := &api.StoragePool{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "StoragePool"}, Metadata: api.ObjectMeta{Name: randomName("ceph-")},
		Spec: api.StoragePoolSpec{Driver: api.PoolDriverRBD, RBD: &api.RBDPoolSpec{Monitors: c.Monitors, Pool: c.Pool, User: user,
			KeyringSecret: &api.SecretKeyRef{Name: secret, Key: "keyring"}}}}
	l.create(t, pool)
	d, err := storage.NewRBD(storage.RBDConfig{Pool: c.Pool, Monitors: c.Monitors, User: user, Key: key, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return sharedPool{pool: pool, driver: d, key: key}
}

func nfsPool(t *testing.T, l *lab) sharedPool {
	t.Helper()
	s := nfstest.Start(t)
	pool := &api.StoragePool{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "StoragePool"}, Metadata: api.ObjectMeta{Name: randomName("nfs-")},
		Spec: api.StoragePoolSpec{Driver: api.PoolDriverNFS, NFS: &api.NFSPoolSpec{Server: s.Host, Export: s.Path}}}
	l.create(t, pool)
	d, err := storage.NewNFS(storage.NFSConfig{Server: s.Host, Export: s.Path})
	if err != nil {
		t.Fatal(err)
	}
	return sharedPool{pool: pool, driver: d}
}

func requireSharedBoot(t *testing.T) {
	t.Helper()
	needQEMU(t)
	if testing.Short() {
		t.Skip("boots two guests from shared storage; not in -short mode")
	}
}

// TestRBDVolumeMovesHosts: a VM boots from an RBD volume cloned from an
// image, writes to it and is stopped; a VM on another host boots the same
// volume and reads what the first wrote. The key is in 0600 files and on
// no QEMU's command line, and deleting the Volume deletes the RBD image.
func TestRBDVolumeMovesHosts(t *testing.T) {
	requireSharedBoot(t)
	testVolumeMovesHosts(t, rbdPool)
}

// TestNFSVolumeMovesHosts is TestRBDVolumeMovesHosts on an NFS share.
func TestNFSVolumeMovesHosts(t *testing.T) {
	requireSharedBoot(t)
	testVolumeMovesHosts(t, nfsPool)
}

func testVolumeMovesHosts(t *testing.T, makePool func(*testing.T, *lab) sharedPool) {
	imgDir := t.TempDir()
	l := newLab(t, func(c *agent.Config) { c.AllowFileDirs = append(c.AllowFileDirs, imgDir) })
	bootDiskImage(t, l, imgDir)
	p := makePool(t, l)
	h2Dir := l.addAgent(t, "h2")
	// Two boots under TCG take longer than servertest.Ctx's 30 s.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	vol := volume("root", 64<<20, api.VolumeSource{Image: "bootdisk"})
	vol.Spec.Host, vol.Spec.Pool = "", p.pool.Metadata.Name
	l.create(t, vol)
	token := randomName("hearth-")
	l.create(t, diskVM("first", "h1", "root", markerScript(token)))

	m := l.markers(t, "first")
	if got := m["disk-marker"]; len(got) != 1 || got[0] != "none" {
		t.Fatalf("first boot: the disk held %q at its marker offset, want nothing", got)
	}
	if got := m["disk-written"]; len(got) != 1 || got[0] != token {
		t.Fatalf("first boot: read back %q after writing, want %q", got, token)
	}
	v := l.waitVolume(t, "root", phase(api.VolumeInUse, 64<<20))
	if v.Spec.Host != "h1" || v.Spec.Backend != p.pool.Spec.Driver || v.Status.AttachedTo != "first" {
		t.Errorf("volume: host %q backend %q attachedTo %q, want h1, %s, first", v.Spec.Host, v.Spec.Backend, v.Status.AttachedTo, p.pool.Spec.Driver)
	}
	if !strings.Contains(v.Status.Path, "hearth-vol-"+v.Metadata.UID) {
		t.Errorf("volume status.path %q does not name its image in the pool", v.Status.Path)
	}
	if _, err := p.driver.Stat(ctx, v.Metadata.UID); err != nil {
		t.Fatalf("the volume is not in the pool: %v", err)
	}
	if p.key != "" {
		checkKeyHidden(t, l.get(t, "first"), l.dataDir, p)
	}

	// Stop it, and run the disk on the other host.
	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "first", map[string]any{"spec": map[string]any{"powerState": api.PowerStopped}}, false); err != nil {
		t.Fatal(err)
	}
	l.waitPhase(t, "first", api.VMStopped)
	if _, err := l.env.Admin.Delete(ctx, "VirtualMachine", "lab", "first"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, time.Minute, func() error {
		if _, err := l.env.Admin.Get(ctx, "VirtualMachine", "lab", "first"); !api.IsNotFound(err) {
			return fmt.Errorf("VM first still there (%v)", err)
		}
		return nil
	})
	l.create(t, diskVM("second", "h2", "root", markerScript(token)))
	m = l.markers(t, "second")
	if got := m["disk-marker"]; len(got) != 1 || got[0] != token {
		t.Fatalf("second boot, on h2: the disk held %q, want the marker %q the first boot wrote on h1", got, token)
	}
	second := l.get(t, "second")
	if second.Status.Host != "h2" {
		t.Errorf("VM second runs on %q, want h2", second.Status.Host)
	}
	if p.key != "" {
		checkKeyHidden(t, second, h2Dir, p)
	}
	l.waitVolume(t, "root", func(v *api.Volume) error {
		if v.Status.AttachedTo != "second" {
			return fmt.Errorf("attachedTo %q, want second (on another host than the volume's)", v.Status.AttachedTo)
		}
		return nil
	})

	// Deleting the VM and then the Volume deletes the volume from the pool.
	if _, err := l.env.Admin.Delete(ctx, "VirtualMachine", "lab", "second"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, time.Minute, func() error {
		if _, err := l.env.Admin.Get(ctx, "VirtualMachine", "lab", "second"); !api.IsNotFound(err) {
			return fmt.Errorf("VM second still there (%v)", err)
		}
		return nil
	})
	if _, err := l.env.Admin.Delete(ctx, "Volume", "lab", "root"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, time.Minute, func() error {
		if _, err := p.driver.Stat(ctx, v.Metadata.UID); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("the deleted volume is still in the pool (stat: %v)", err)
		}
		return nil
	})
}

// checkKeyHidden checks that the rbd key the VM's host wrote is in files
// of mode 0600 and not on the VM's QEMU command line.
func checkKeyHidden(t *testing.T, vm *api.VirtualMachine, dataDir string, p sharedPool) {
	t.Helper()
	for _, f := range []string{"key", "keyring"} {
		path := filepath.Join(dataDir, "pools", p.pool.Metadata.Name, f)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("the pool's %s file: %v", f, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
		}
	}
	pidData, err := os.ReadFile(filepath.Join(dataDir, "vms", vm.Metadata.UID, compute.PIDFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidData)))
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cmdline), `"driver":"rbd"`) {
		t.Errorf("QEMU does not open the disk with librbd:\n%s", strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	if strings.Contains(string(cmdline), p.key) {
		t.Errorf("the rbd key is on QEMU's command line")
	}
}

// tickScript is user-data that fills 16 MiB of the guest's RAM with a
// random pattern, then every half second prints a counter and whether
// the pattern is intact, rewriting part of it each time (dirtying
// memory).
const tickScript = `#!/bin/sh
dd if=/dev/urandom of=/dev/shm/pattern bs=1M count=16 2>/dev/null
want=$(md5sum </dev/shm/pattern)
(
i=0
while :; do
	i=$((i+1))
	dd if=/dev/shm/pattern of=/dev/shm/copy bs=1M count=4 2>/dev/null
	dd if=/dev/shm/copy of=/dev/shm/pattern bs=1M count=4 conv=notrunc 2>/dev/null
	if [ "$(md5sum </dev/shm/pattern)" = "$want" ]; then ok=ok; else ok=bad; fi
	echo "HEARTH-GUEST tick=$i memory=$ok" >/dev/ttyS0
	sleep 0.5
done
) </dev/null >/dev/null 2>&1 &
`

var tickRE = regexp.MustCompile(`HEARTH-GUEST tick=(\d+) memory=(\w+)`)

// consoleTicks returns the counter values in a console log and whether
// every memory check passed.
func consoleTicks(path string) (n []int, ok bool) {
	b, _ := os.ReadFile(path)
	ok = true
	for _, m := range tickRE.FindAllStringSubmatch(string(b), -1) {
		i, _ := strconv.Atoi(m[1])
		n = append(n, i)
		ok = ok && m[2] == "ok"
	}
	return n, ok
}

// startMover creates VM "mover" on a Volume "data" in the shared pool p,
// its guest counting on its console (tickScript), and returns it once it
// has counted to 3.
func (l *lab) startMover(t *testing.T, p sharedPool) *api.VirtualMachine {
	t.Helper()
	vol := volume("data", 64<<20, api.VolumeSource{})
	vol.Spec.Host, vol.Spec.Pool = "", p.pool.Metadata.Name
	l.create(t, vol)
	vm := l.vm("mover")
	vm.Spec.Disks = []api.VMDisk{{Volume: "data"}}
	vm.Spec.CloudInit.UserData = tickScript
	l.create(t, vm)
	servertest.Eventually(t, 4*time.Minute, func() error {
		vm := l.get(t, "mover")
		if n, _ := consoleTicks(vm.Status.ConsoleLog); len(n) < 3 {
			return fmt.Errorf("the guest has not counted to 3 yet (phase %q, %+v)", vm.Status.Phase, vm.Status.Conditions)
		}
		return nil
	})
	cur := l.get(t, "mover")
	return cur
}

// TestLiveMigrationBetweenHosts: a running VM whose disk is an RBD
// volume moves live from h1 to h2 when its spec.host changes: it is
// Running on h2 afterwards, its guest's counter carries on from where it
// was on h1 (no reboot) with its memory pattern intact, and h1 runs no
// QEMU for it any more.
func TestLiveMigrationBetweenHosts(t *testing.T) {
	requireSharedBoot(t)
	l := newLab(t)
	p := rbdPool(t, l)
	h2Dir := l.addAgent(t, "h2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cur := l.startMover(t, p)
	h1Log, h1PID := cur.Status.ConsoleLog, cur.Status.PID
	// h1's console log goes with h1's copy of the VM: the count so far.
	before, _ := consoleTicks(h1Log)
	last := before[len(before)-1]

	if _, err := l.env.Admin.Patch(ctx, "VirtualMachine", "lab", "mover", map[string]any{"spec": map[string]any{"host": "h2"}}, false); err != nil {
		t.Fatal(err)
	}
	sawMigrating := false
	var moved *api.VirtualMachine
	servertest.Eventually(t, 5*time.Minute, func() error {
		moved = l.get(t, "mover")
		if moved.Status.Phase == api.VMMigrating {
			sawMigrating = true
		}
		if moved.Status.Host != "h2" || moved.Status.Phase != api.VMRunning || moved.Status.Migration != nil {
			return fmt.Errorf("VM on %q, phase %q, migration %+v", moved.Status.Host, moved.Status.Phase, moved.Status.Migration)
		}
		return nil
	})
	t.Logf("saw phase Migrating: %v", sawMigrating)
	servertest.Eventually(t, time.Minute, func() error {
		after, ok := consoleTicks(moved.Status.ConsoleLog)
		if !ok {
			return fmt.Errorf("the guest's memory pattern changed across the move")
		}
		if len(after) < 3 {
			return fmt.Errorf("the guest printed %v on h2 so far", after)
		}
		// It counted on while it moved; a guest that started again
		// would count from 1.
		if after[0] <= last {
			return fmt.Errorf("the counter was at %d on h1 before the move and went %v on h2: the guest did not carry on", last, after)
		}
		return nil
	})
	if alive(h1PID) {
		t.Errorf("h1's QEMU (pid %d) still runs after the move", h1PID)
	}
	if moved.Status.PID == h1PID {
		t.Errorf("status.pid is still h1's")
	}
	// The stream was TLS: each host had its own certificate from the
	// migration CA, its key readable by the agent only.
	for host, dir := range map[string]string{"h1": l.dataDir, "h2": h2Dir} {
		tls := filepath.Join(dir, "migration-tls")
		if fi, err := os.Stat(filepath.Join(tls, "server-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s's migration key: %v, %v; want a file of mode 0600", host, fi, err)
		}
		b, _ := os.ReadFile(filepath.Join(tls, "server-cert.pem"))
		if blk, _ := pem.Decode(b); blk == nil {
			t.Errorf("%s has no migration certificate", host)
		} else if c, err := x509.ParseCertificate(blk.Bytes); err != nil || c.Subject.CommonName != host || c.Issuer.CommonName != pki.MigrationCACommonName {
			t.Errorf("%s's migration certificate: %v, for %q by %q", host, err, c.Subject.CommonName, c.Issuer.CommonName)
		}
	}
}
