package storage

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRBDFence: a client that holds a volume open and has written to it
// (a QEMU on a lost host, here qemu-io) is cut off by Fence: its next
// write fails, while a new client opens the volume and writes. A volume
// nobody has open fences nobody.
func TestRBDFence(t *testing.T) {
	requireQemuImg(t)
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("qemu-io not found: install Debian's qemu-utils")
	}
	r, _, _ := newTestRBD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := "fence-" + randomHex(4)
	if err := r.CreateVolume(ctx, id, 8<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.DeleteVolume(context.Background(), id) })
	if got, err := r.Fence(ctx, id); err != nil || len(got) != 0 {
		t.Fatalf("fencing a volume nobody has open: fenced %v, %v; want nobody", got, err)
	}

	a, err := r.Attachment(id)
	if err != nil {
		t.Fatal(err)
	}
	objs, name := qemuTarget(t, a)
	old := exec.Command("qemu-io", append(objs, name)...)
	stdin, _ := old.StdinPipe()
	stdout, _ := old.StdoutPipe()
	old.Stderr = old.Stdout
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	defer old.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Split(scanPrompts)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	do := func(cmd string) string {
		t.Helper()
		io.WriteString(stdin, cmd+"\n")
		var out strings.Builder
		deadline := time.After(45 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					return out.String()
				}
				out.WriteString(l)
				if strings.Contains(l, "wrote") || strings.Contains(l, "rror") || strings.Contains(l, "failed") {
					return out.String()
				}
			case <-deadline:
				return out.String() + " (no answer in 45s)"
			}
		}
	}
	if got := do("write -P 1 0 4096"); !strings.Contains(got, "wrote") {
		t.Fatalf("the old client's first write: %q", got)
	}

	fenced, err := r.Fence(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(fenced) == 0 {
		t.Fatalf("Fence cut nobody off, but qemu-io has the volume open")
	}
	if got := do("write -P 2 0 4096"); strings.Contains(got, "wrote") {
		t.Errorf("the fenced client still writes: %q", got)
	}
	writeVolume(t, r, id, 3, 4096)
	if got := readVolume(t, r, id, 1); got[0] != 3 {
		t.Errorf("the disk holds %d after the new client's write, want 3", got[0])
	}
}

// scanPrompts splits qemu-io's output into lines and prompts.
func scanPrompts(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\n' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
