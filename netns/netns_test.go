package netns_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces")
	}
}

func randomName(t *testing.T) string {
	var b [4]byte
	rand.Read(b[:])
	return "hnstest-" + hex.EncodeToString(b[:])
}

// inode identifies a namespace.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadNetns is the namespace of the thread the caller runs on.
func threadNetns(t *testing.T) uint64 {
	return inode(t, "/proc/thread-self/ns/net")
}

func TestCreateDoDelete(t *testing.T) {
	requireRoot(t)
	name := randomName(t)
	ns, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	t.Cleanup(func() { netns.Delete(name) })
	if _, err := netns.Create(name); !errors.Is(err, os.ErrExist) {
		t.Errorf("creating %s twice: %v, want an error wrapping os.ErrExist", name, err)
	}
	names, err := netns.List()
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("List() = %v, %v; want it to hold %s", names, err, name)
	}
	home := inode(t, "/proc/thread-self/ns/net")
	want := inode(t, netns.Path(name))
	if want == home {
		t.Fatal("the new namespace is the process's own")
	}
	var got uint64
	if err := netns.DoNamed(name, func() error { got = threadNetns(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("DoNamed ran in namespace %d, want %d", got, want)
	}
	if err := netns.Do(ns, func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	if err := netns.Delete(name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(netns.Path(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Delete, %s: %v", netns.Path(name), err)
	}
	if err := netns.Delete(name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleting twice: %v, want an error wrapping os.ErrNotExist", err)
	}
	// The handle still holds the namespace.
	if err := netns.Do(ns, func() error { got = threadNetns(t); return nil }); err != nil || got != want {
		t.Errorf("Do on a handle after Delete: %v, namespace %d, want %d", err, got, want)
	}
}

// No goroutine other than Do's ever runs in the namespace: many Do calls
// at once, and every other goroutine's thread stays home.
func TestDoLeavesNoThreadBehind(t *testing.T) {
	requireRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	home := inode(t, "/proc/thread-self/ns/net")
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 100 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- netns.Do(ns, func() error {
				if threadNetns(t) == home {
					return errors.New("Do ran at home")
				}
				return nil
			})
		}()
		go func() {
			defer wg.Done()
			runtime.Gosched()
			if got := threadNetns(t); got != home {
				errs <- fmt.Errorf("a goroutine ran in namespace %d, not at home (%d)", got, home)
			}
		}()
	}
	wg.Wait()
	// The main thread, which the runtime never ends, was never moved.
	if got := inode(t, "/proc/self/ns/net"); got != home {
		errs <- fmt.Errorf("the main thread is in namespace %d, not at home (%d)", got, home)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b", "../x"} {
		if err := netns.ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted it", bad)
		}
		if _, err := netns.Create(bad); err == nil {
			t.Errorf("Create(%q) accepted it", bad)
		}
	}
	if err := netns.ValidName("hearth-router-1"); err != nil {
		t.Error(err)
	}
}

func TestOpenRefusesWhatIsNotANamespace(t *testing.T) {
	path := t.TempDir() + "/plain"
	os.WriteFile(path, nil, 0o644)
	if _, err := netns.OpenPath(path); err == nil {
		t.Error("OpenPath accepted a plain file")
	}
}

func TestSysctlInNamespace(t *testing.T) {
	requireRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var inside, home string
	err = netns.Do(ns, func() error {
		if err := netns.WriteSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		inside, err = netns.ReadSysctl("net/ipv4/ip_forward")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	home, _ = netns.ReadSysctl("net/ipv4/ip_forward")
	if inside != "1" {
		t.Errorf("ip_forward inside = %q, want 1", inside)
	}
	// The new namespace's setting is its own (the test machine's may be
	// either); a fresh namespace starts with forwarding off.
	var fresh string
	ns2, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns2.Close()
	netns.Do(ns2, func() error { fresh, err = netns.ReadSysctl("net/ipv4/ip_forward"); return err })
	if fresh != "0" {
		t.Errorf("a fresh namespace has ip_forward %q (home %q): sysctls are not per namespace", fresh, home)
	}
}
