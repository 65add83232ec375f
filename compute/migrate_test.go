package compute

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"hearth.dev/hearth/cloudinit"
	"hearth.dev/hearth/storage"
	"hearth.dev/hearth/storage/cephtest"
)

// tickScript is the guest's user-data: fill 16 MiB of RAM (tmpfs) with a
// random pattern, then every half second print a counter and whether the
// pattern is still what it was, while rewriting a quarter of it (the
// same bytes), so the guest keeps dirtying memory.
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

// ticks returns the counter values on a console log, and whether every
// memory check passed.
func ticks(t *testing.T, dir string) (n []int, ok bool) {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(dir, ConsoleLog))
	ok = true
	for _, m := range tickRE.FindAllStringSubmatch(string(b), -1) {
		i, _ := strconv.Atoi(m[1])
		n = append(n, i)
		ok = ok && m[2] == "ok"
	}
	return n, ok
}

// TestLiveMigration moves a running test guest between two QEMUs, as two
// hosts would: its disk is an RBD volume each "host" opens with its own
// configuration and key files, the destination starts with the same
// devices and -incoming, and after the move the guest's counter goes on
// from where it was (it did not reboot) and its memory pattern is intact.
// Last, a move whose destination dies after "completed": the source,
// resumed, carries on. It ping-pongs HEARTH_MIGRATIONS times (default 2) and logs QMP's
// downtime and total time of each, and their p50 and p95 (the figures in
// docs/BENCHMARKS.md).
func TestLiveMigration(t *testing.T) {
	requireQEMU(t)
	if testing.Short() {
		t.Skip("boots and migrates a guest; not in -short mode")
	}
	rounds := 2
	if s := os.Getenv("HEARTH_MIGRATIONS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	c := cephtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	user := "hearth-mig-" + strconv.Itoa(os.Getpid())
	key, err := c.AddUser(ctx, user, c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	// Two hosts: each its own driver files (keyring, configuration), its
	// own VM directory; one disk in the pool.
	var drivers [2]*storage.RBD
	var dirs [2]string
	for i := range drivers {
		if drivers[i], err = storage.NewRBD(storage.RBDConfig{Pool: c.Pool, Monitors: c.Monitors, User: user, Key: key, Dir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		dirs[i] = t.TempDir()
	}
	vol := "mig-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := drivers[0].CreateVolume(ctx, vol, 64<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drivers[0].DeleteVolume(context.Background(), vol) })

	base := testSpec(t)
	base.NICs = nil
	seed := cloudinit.Seed{InstanceID: base.ID, Hostname: "mover", UserData: tickScript}
	spec := func(i int, incoming string) Spec {
		s := base
		s.Dir = dirs[i]
		a, err := drivers[i].Attachment(vol)
		if err != nil {
			t.Fatal(err)
		}
		d := Disk{Format: a.Format, Protocol: a.Protocol}
		for _, sec := range a.Secrets {
			d.Secrets = append(d.Secrets, Secret{ID: sec.ID, File: sec.File})
		}
		s.Disks = []Disk{d}
		// The seed is a local file: each host writes the same one.
		s.Seed = filepath.Join(dirs[i], "seed.iso")
		if err := seed.WriteISO(s.Seed); err != nil {
			t.Fatal(err)
		}
		s.Incoming = incoming
		t.Cleanup(func() { killForCleanup(t, s) })
		return s
	}
	q := NewQEMU(QEMUOptions{})
	src := spec(0, "")
	start(t, q, src)
	waitConsole(t, src.Dir, "HEARTH-GUEST tick=3 ", 4*time.Minute)

	var downtimes, totals []time.Duration
	from := 0
	for round := range rounds {
		to := 1 - from
		before, _ := ticks(t, dirs[from])
		// The destination's console log starts empty: what it shows is
		// what the guest printed after the move.
		os.Remove(filepath.Join(dirs[to], ConsoleLog))
		uri := fmt.Sprintf("tcp:127.0.0.1:%d", freeTCPPort(t))
		dst := spec(to, uri)
		if _, err := q.Start(ctx, dst); err != nil {
			t.Fatalf("round %d: starting the destination: %v", round, err)
		}
		m, err := q.Migrate(ctx, src.ID, src.Dir, uri, nil)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := q.Resume(ctx, dst.ID, dst.Dir); err != nil {
			t.Fatalf("round %d: resuming the destination: %v", round, err)
		}
		if err := q.Kill(ctx, src.ID, src.Dir); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: host %d → %d: downtime %v, total %v, setup %v, %d MiB sent", round, from, to, m.Downtime, m.Total, m.Setup, m.Transferred>>20)
		downtimes, totals = append(downtimes, m.Downtime), append(totals, m.Total)

		last := 0
		if len(before) > 0 {
			last = before[len(before)-1]
		}
		deadline := time.Now().Add(time.Minute)
		for {
			after, ok := ticks(t, dirs[to])
			if !ok {
				t.Fatalf("round %d: the guest's memory pattern changed across the move:\n%s", round, readFile(filepath.Join(dirs[to], ConsoleLog)))
			}
			if len(after) >= 3 {
				// The guest counted on while it moved (and a tick
				// printed during the switch may be lost); one that
				// started again would count from 1.
				if after[0] <= last {
					t.Fatalf("round %d: the counter was at %d on the source and is at %v on the destination: the guest did not carry on", round, last, after)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the guest printed %v on the destination in a minute; console:\n%s", round, after, readFile(filepath.Join(dirs[to], ConsoleLog)))
			}
			time.Sleep(200 * time.Millisecond)
		}
		src, from = dst, to
	}
	t.Logf("%d migrations of a 256 MiB TCG guest dirtying memory: downtime p50 %v p95 %v; total p50 %v p95 %v",
		rounds, percentile(downtimes, 50), percentile(downtimes, 95), percentile(totals, 50), percentile(totals, 95))

	// A destination that dies after "completed", before it resumes: the
	// source, left paused ("postmigrate", which the agent looks for), runs
	// the guest on with its memory when resumed (QMP cont), as the agent
	// does when the destination does not take the VM (agent/migrate.go).
	to := 1 - from
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", freeTCPPort(t))
	dst := spec(to, uri)
	if _, err := q.Start(ctx, dst); err != nil {
		t.Fatalf("starting the last destination: %v", err)
	}
	if _, err := q.Migrate(ctx, src.ID, src.Dir, uri, nil); err != nil {
		t.Fatal(err)
	}
	info, running, err := q.Lookup(ctx, src.ID, src.Dir)
	if err != nil || !running || info.State != Paused || info.Status != "postmigrate" {
		t.Fatalf("the source after a completed migration: %+v, running %v, %v; want paused, postmigrate", info, running, err)
	}
	if err := q.Kill(ctx, dst.ID, dst.Dir); err != nil {
		t.Fatal(err)
	}
	before, _ := ticks(t, src.Dir)
	if len(before) == 0 {
		t.Fatalf("the source printed no ticks:\n%s", readFile(filepath.Join(src.Dir, ConsoleLog)))
	}
	if err := q.Resume(ctx, src.ID, src.Dir); err != nil {
		t.Fatalf("resuming the source after its destination died: %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		after, ok := ticks(t, src.Dir)
		if !ok {
			t.Fatalf("the guest's memory pattern changed after the source resumed:\n%s", readFile(filepath.Join(src.Dir, ConsoleLog)))
		}
		if len(after) >= len(before)+3 {
			if n := after[len(before):]; n[0] != before[len(before)-1]+1 {
				t.Fatalf("the counter was at %d when the source paused and went on %v: the guest did not carry on", before[len(before)-1], n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed source printed %v after %v in a minute", after[len(before):], before[len(before)-1])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(i, 0)]
}

// freeTCPPort returns a port on 127.0.0.1 nothing listens on now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
