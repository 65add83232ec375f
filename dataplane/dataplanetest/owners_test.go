package dataplanetest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/netns"
)

// The test binary, run with HEARTH_TEST_LAB_OWNER=1, makes a lab, says
// its prefix and sleeps: a test that will be killed before its Close.
func TestMain(m *testing.M) {
	if os.Getenv("HEARTH_TEST_LAB_OWNER") == "1" {
		l, err := New(Config{Hosts: 1})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(l.Prefix)
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

func labNamespaces(prefix string) []string {
	names, _ := netns.List()
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// TestSweepDeadLabs: the namespaces of a lab whose owner was killed
// (kill -9: no Close ran) are deleted by the next sweep, and the lab of
// a live owner (this test) is left alone.
func TestSweepDeadLabs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root; CI runs as root")
	}
	live, err := New(Config{Hosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "HEARTH_TEST_LAB_OWNER=1")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	dead := strings.TrimSpace(line)
	cmd.Process.Kill()
	cmd.Wait()
	if !labPrefix.MatchString(dead) || len(labNamespaces(dead)) == 0 {
		t.Fatalf("the killed owner said %q and left namespaces %v, want a lab's prefix and its namespaces", dead, labNamespaces(dead))
	}
	t.Cleanup(func() { removeLab(context.Background(), dead) })

	swept, err := SweepDeadLabs(context.Background())
	if err != nil {
		t.Errorf("SweepDeadLabs: %v", err)
	}
	if !slices.Contains(swept, dead) {
		t.Errorf("swept %v, want %s among them", swept, dead)
	}
	if ns := labNamespaces(dead); len(ns) > 0 {
		t.Errorf("namespaces of the dead owner's lab left: %v", ns)
	}
	if _, err := os.Stat(ownerPath(dead)); err == nil {
		t.Errorf("the dead owner's lab is still recorded")
	}
	if slices.Contains(swept, live.Prefix) || len(labNamespaces(live.Prefix)) == 0 {
		t.Errorf("the live owner's lab was swept (%v), or its namespaces removed (%v)", swept, labNamespaces(live.Prefix))
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ownerPath(live.Prefix)); err == nil {
		t.Errorf("Close left the lab recorded")
	}
}
