package console_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/agent/console"
	"hearth.dev/hearth/agent/console/consoletest"
	"hearth.dev/hearth/compute"
)

// qemuLog opens the console log as QEMU does with logappend=on, and keeps
// it open as QEMU does while the VM runs.
func qemuLog(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, compute.ConsoleLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func write(t *testing.T, f *os.File, s string) {
	t.Helper()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func readLog(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func rotate(t *testing.T, dir string, max int64) bool {
	t.Helper()
	rotated, err := console.RotateLog(dir, max)
	if err != nil {
		t.Fatalf("RotateLog: %v", err)
	}
	return rotated
}

func TestRotateLog(t *testing.T) {
	dir := t.TempDir()
	// No log yet: nothing to do.
	if rotate(t, dir, 10) {
		t.Fatal("rotated a missing log")
	}
	qemu := qemuLog(t, dir)
	write(t, qemu, "0123456789")
	if rotate(t, dir, 10) {
		t.Fatal("rotated a log of exactly the cap")
	}
	write(t, qemu, "abc")
	logPath := filepath.Join(dir, compute.ConsoleLog)
	before, _ := os.Stat(logPath)
	old := before.ModTime().Add(-time.Hour)
	if err := os.Chtimes(logPath, old, old); err != nil {
		t.Fatal(err)
	}
	if !rotate(t, dir, 10) {
		t.Fatal("did not rotate a log over the cap")
	}
	if got := readLog(t, dir, compute.ConsoleLogPrevious); got != "0123456789abc" {
		t.Errorf("console.log.1 = %q, want the whole log", got)
	}
	after, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != 0 || !os.SameFile(before, after) {
		t.Errorf("console.log: size %d, same file %v; want it emptied in place", after.Size(), os.SameFile(before, after))
	}
	// The kept log carries the time of its last output, not the rotation's.
	if fi, _ := os.Stat(filepath.Join(dir, compute.ConsoleLogPrevious)); !fi.ModTime().Equal(old) {
		t.Errorf("console.log.1 modified %v, want the log's %v", fi.ModTime(), old)
	}
	if _, err := os.Stat(filepath.Join(dir, compute.ConsoleLogPrevious+".tmp")); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}

	// The writer's O_APPEND puts what follows at the new start: no hole.
	write(t, qemu, "after")
	if got := readLog(t, dir, compute.ConsoleLog); got != "after" {
		t.Errorf("console.log after the rotation = %q, want %q", got, "after")
	}

	// The next rotation replaces the kept log.
	write(t, qemu, "-and-more")
	if !rotate(t, dir, 10) {
		t.Fatal("second rotation did not happen")
	}
	if got := readLog(t, dir, compute.ConsoleLogPrevious); got != "after-and-more" {
		t.Errorf("console.log.1 = %q after the second rotation", got)
	}

	// A log far past the cap (none capped it for a while) keeps its end.
	write(t, qemu, strings.Repeat("x", 30)+"0123456789")
	if !rotate(t, dir, 10) {
		t.Fatal("third rotation did not happen")
	}
	if got := readLog(t, dir, compute.ConsoleLogPrevious); got != "0123456789" {
		t.Errorf("console.log.1 = %q, want the last 10 bytes", got)
	}
	if got := readLog(t, dir, compute.ConsoleLog); got != "" {
		t.Errorf("console.log = %q, want it empty", got)
	}
}

// TestRotateLogWithoutRoom: when the copy cannot be made, the cap still
// holds and the error says the contents were lost.
func TestRotateLogWithoutRoom(t *testing.T) {
	// A directory in the way of the temporary file fails the copy even
	// for root.
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, compute.ConsoleLogPrevious+".tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, compute.ConsoleLog), []byte("0123456789abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	rotated, err := console.RotateLog(dir, 10)
	if !rotated || err == nil || !strings.Contains(err.Error(), "emptied without keeping") {
		t.Fatalf("RotateLog = %v, %v; want rotated with an error saying what was lost", rotated, err)
	}
	if got := readLog(t, dir, compute.ConsoleLog); got != "" {
		t.Errorf("console.log = %q, want it emptied", got)
	}
}

// TestLogAcrossRotation: the log served is console.log.1 then console.log,
// and tail counts across both.
func TestLogAcrossRotation(t *testing.T) {
	vm := consoletest.NewVM(t, "")
	if err := os.WriteFile(filepath.Join(vm.Dir, compute.ConsoleLogPrevious), []byte("old boot\nlogin: "), 0o644); err != nil {
		t.Fatal(err)
	}
	vm.AppendLog(t, "root\n# ")
	only := consoletest.NewVM(t, "") // rotated, and nothing written since
	os.Remove(filepath.Join(only.Dir, compute.ConsoleLog))
	if err := os.WriteFile(filepath.Join(only.Dir, compute.ConsoleLogPrevious), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := plainAgent(t, map[string]*consoletest.VM{"u1": vm, "u2": only})
	for _, tt := range []struct{ path, want string }{
		{"/v1/vms/u1/log", "old boot\nlogin: root\n# "},
		{"/v1/vms/u1/log?tail=0", ""},
		{"/v1/vms/u1/log?tail=2", "# "},
		{"/v1/vms/u1/log?tail=7", "root\n# "},
		{"/v1/vms/u1/log?tail=14", "login: root\n# "},
		{"/v1/vms/u1/log?tail=1000", "old boot\nlogin: root\n# "},
		{"/v1/vms/u1/log?tailLines=0", ""},
		{"/v1/vms/u1/log?tailLines=1", "# "},
		{"/v1/vms/u1/log?tailLines=2", "login: root\n# "},
		{"/v1/vms/u1/log?tailLines=3", "old boot\nlogin: root\n# "},
		{"/v1/vms/u1/log?tailLines=99", "old boot\nlogin: root\n# "},
		{"/v1/vms/u2/log", "kept"},
		{"/v1/vms/u2/log?tail=2", "pt"},
		{"/v1/vms/u2/log?tailLines=1", "kept"},
	} {
		if code, body := get(t, srv.URL+tt.path); code != 200 || body != tt.want {
			t.Errorf("GET %s = %d %q, want %q", tt.path, code, body, tt.want)
		}
	}
}

// rotateWhole rotates the log in dir, keeping all of it.
func rotateWhole(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, compute.ConsoleLog))
	if err != nil {
		t.Fatal(err)
	}
	if !rotate(t, dir, fi.Size()-1) {
		t.Fatal("no rotation")
	}
}

// TestLogFollowRotation: someone following the log across rotations gets
// every byte once, in order, whether the log grew back past where they
// were before they looked again or not.
func TestLogFollowRotation(t *testing.T) {
	vm := consoletest.NewVM(t, "")
	qemu := qemuLog(t, vm.Dir)
	write(t, qemu, "kept\n")
	rotateWhole(t, vm.Dir)
	write(t, qemu, "boot\n")
	srv := plainAgent(t, map[string]*consoletest.VM{"u1": vm})
	req, _ := http.NewRequestWithContext(ctxFor(t), http.MethodGet, srv.URL+"/v1/vms/u1/log?follow=1&tail=8", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	expect := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("reading %q: got %q, %v", want, got, err)
		}
		if string(got) != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	expect("pt\nboot\n")

	// Rotated with output the follower has not seen yet, which is then
	// only in console.log.1.
	write(t, qemu, "line 1\n")
	rotateWhole(t, vm.Dir)
	write(t, qemu, "line 2\n")
	expect("line 1\nline 2\n")

	// Rotated, then the log grows past where the follower was before it
	// looks again: size alone would not tell it was rotated.
	write(t, qemu, "line 3\n")
	rotateWhole(t, vm.Dir)
	long := strings.Repeat("line 4 is long\n", 10)
	write(t, qemu, long)
	expect("line 3\n" + long)

	// Truncated without a rotation (an administrator emptied it): followed
	// from its start.
	if err := os.Truncate(filepath.Join(vm.Dir, compute.ConsoleLog), 0); err != nil {
		t.Fatal(err)
	}
	write(t, qemu, "line 5\n")
	expect("line 5\n")

	// Nothing was repeated: the stream ends with the VM, right here.
	vm.Stop()
	os.RemoveAll(vm.Dir)
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after the VM went: read %q, %v; want the end of the stream", rest, err)
	}
}

// TestLogRotatedWhileRead: a log read while a writer keeps writing and
// rotations keep happening is always a piece of the true stream. Lines
// written between a rotation's copy and its truncation may be lost; none
// may be repeated, come out of order, or be preceded by a hole.
func TestLogRotatedWhileRead(t *testing.T) {
	vm := consoletest.NewVM(t, "")
	qemu := qemuLog(t, vm.Dir)
	srv := plainAgent(t, map[string]*consoletest.VM{"u1": vm})
	done := make(chan struct{})
	stopped := make(chan struct{})
	var rotations int
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if _, err := fmt.Fprintf(qemu, "line %08d\n", i); err != nil {
				return
			}
			if i%50 == 0 {
				if ok, _ := console.RotateLog(vm.Dir, 1000); ok {
					rotations++
				}
			}
		}
	}()
	reads := 0
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); reads++ {
		_, body := get(t, srv.URL+"/v1/vms/u1/log")
		if strings.ContainsRune(body, 0) {
			t.Fatalf("read %d: the log has NUL bytes: a write landed past the end", reads)
		}
		lines := strings.Split(body, "\n")
		if lines[len(lines)-1] != "" {
			t.Fatalf("read %d ends inside a line: %q", reads, lines[len(lines)-1])
		}
		last := -1
		for j, l := range lines[:len(lines)-1] {
			var n int
			if _, err := fmt.Sscanf(l, "line %d", &n); err != nil || len(l) != 13 {
				if j == 0 {
					continue // a log kept from its end may begin inside a line
				}
				t.Fatalf("read %d, line %d: %q is not a line written", reads, j, l)
			}
			if n <= last {
				t.Fatalf("read %d, line %d: line %d after line %d; lines %q", reads, j, n, last, lines[max(0, j-3):j+2])
			}
			last = n
		}
	}
	close(done)
	<-stopped
	t.Logf("%d reads, %d rotations", reads, rotations)
	if rotations == 0 {
		t.Errorf("no rotation happened")
	}
	if fi, err := os.Stat(filepath.Join(vm.Dir, compute.ConsoleLog)); err != nil || fi.Size() > 2000 {
		t.Errorf("console.log: %v, %v; want it capped", fi.Size(), err)
	}
}
