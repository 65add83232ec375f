package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"hearth.dev/hearth/netns"
)

// How long processes get to stop after SIGTERM before they are killed.
const (
	hostGrace   = 10 * time.Second
	serverGrace = 15 * time.Second
)

// Down removes the sandbox in cfg.Dir (only Dir, Prefix and Progress of
// cfg matter; the record's prefix wins over cfg's). In this order it
//
//   - stops the agents, the boot service, the machines and every process
//     still inside the sandbox's namespaces (VMs the agents started live
//     there too), SIGTERM first and SIGKILL after a grace period;
//   - stops the server;
//   - deletes the root namespace's veth and the network namespaces, which
//     takes the bridge and every link inside with them;
//   - removes the files it made under Dir, and Dir if Up made it.
//
// It works from DIR/sandbox.json, and also from the naming scheme alone
// (PREFIX-underlay, PREFIX-h<N>, PREFIX-lan, PREFIX-boot, PREFIX-router, PREFIX-storage, PREFIX-ctl, the
// server whose --data-dir is DIR/server), so a missing or partial record still leaves nothing
// behind. Running it again does nothing. It goes on after a failed step
// and returns every failure.
func Down(ctx context.Context, cfg Config) error {
	dir := cfg.Dir
	if dir == "" {
		dir = DefaultDir
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	if os.Geteuid() != 0 {
		return errors.New("the sandbox's namespaces and links can only be removed by root")
	}
	st, err := LoadState(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		st = &State{Dir: dir}
	case err != nil:
		fmt.Fprintf(progress, "sandbox: %v; removing what the names show\n", err)
		st = &State{Dir: dir}
	}
	prefix := st.Prefix
	if prefix == "" {
		prefix = cfg.Prefix
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := validPrefix(prefix); err != nil {
		return err
	}
	n := names(prefix)
	var errs []error

	nss := union(st.Namespaces, namespacesNamed(n))
	ids := map[nsID]bool{}
	for _, name := range nss {
		if id, err := nsOf(netns.Path(name)); err == nil {
			ids[id] = true
		}
	}
	ours := func(name string) bool {
		return slices.Contains(nss, name) || n.isOurs(name)
	}
	// Agents first, with everything inside the namespaces. Sweep again in
	// case something started a process while the others were stopping.
	for round := 0; round < 3; round++ {
		var ps []Process
		for _, h := range st.Hosts {
			if h.Agent.alive() {
				ps = append(ps, *h.Agent)
			}
		}
		if p := st.Provisioning; p != nil && p.Boot.alive() {
			ps = append(ps, *p.Boot)
		}
		if p := st.Provisioning; p != nil && p.Router != nil && p.Router.DNSMasq.alive() {
			ps = append(ps, *p.Router.DNSMasq)
		}
		if in := st.Internet; in != nil && in.HTTP.alive() {
			ps = append(ps, *in.HTTP)
		}
		for _, m := range st.Machines {
			if m.QEMU.alive() {
				ps = append(ps, *m.QEMU)
			}
		}
		ps = uniqueProcs(append(ps, processesInside(ids, ours)...))
		if len(ps) == 0 {
			break
		}
		fmt.Fprintf(progress, "sandbox: stopping %s inside the sandbox\n", plural(len(ps), "process"))
		if left := terminate(ctx, ps, hostGrace); len(left) > 0 {
			errs = append(errs, fmt.Errorf("could not stop %s", pids(left)))
			break
		}
	}

	serverDir := filepath.Join(dir, serverSubdir)
	var servers []Process
	if st.Server.alive() {
		servers = append(servers, *st.Server)
	}
	servers = uniqueProcs(append(servers, findServer(serverDir)...))
	if len(servers) > 0 {
		fmt.Fprintf(progress, "sandbox: stopping the server\n")
		if left := terminate(ctx, servers, serverGrace); len(left) > 0 {
			errs = append(errs, fmt.Errorf("could not stop the server (%s)", pids(left)))
		}
	}

	for _, l := range union(st.RootLinks, []string{n.ctl()}) {
		if err := deleteRootLink(l); err != nil {
			errs = append(errs, err)
		}
	}
	if len(nss) > 0 {
		fmt.Fprintf(progress, "sandbox: deleting network namespaces %s\n", strings.Join(nss, ", "))
	}
	for _, name := range nss {
		if err := deleteNetns(name); err != nil {
			errs = append(errs, err)
		}
	}

	if err := removeFiles(dir, st); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// Removed whole: no sweep need come back (sweep.go).
		if err := forgetOwner(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var hostDirName = regexp.MustCompile(`^h[1-9][0-9]*$`)

// removeFiles removes what Up made under dir: the recorded paths, or,
// without a record, the sandbox's own names when their content shows they
// are the sandbox's. Nothing outside dir is touched, and nothing that has
// a file system mounted inside it.
func removeFiles(dir string, st *State) error {
	paths := slices.Clone(st.Paths)
	if len(paths) == 0 {
		if entries, err := os.ReadDir(dir); err == nil {
			for _, e := range entries {
				p := filepath.Join(dir, e.Name())
				switch {
				case e.Name() == serverLog,
					e.Name() == serverSubdir && exists(filepath.Join(p, "ca.crt")),
					e.Name() == guestSubdir && (exists(filepath.Join(p, "vmlinuz")) || exists(filepath.Join(p, "initrd.img"))),
					e.Name() == debianSubdir && exists(filepath.Join(p, "disk.qcow2")),
					hostDirName.MatchString(e.Name()) && exists(filepath.Join(p, agentLog)),
					e.Name() == bootSubdir && exists(filepath.Join(p, bootLog)),
					e.Name() == routerSubdir && exists(filepath.Join(p, routerLog)),
					e.Name() == storageSubdir && (exists(filepath.Join(p, "ceph", "ceph.conf")) || exists(filepath.Join(p, "nfs", "ganesha.conf"))),
					e.Name() == machinesSubdir && onlyMachines(p):
					paths = append(paths, p)
				}
			}
		}
	}
	mounts := mountPoints()
	var errs []error
	for _, p := range append(paths, statePath(dir)+".tmp", statePath(dir)) {
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			errs = append(errs, fmt.Errorf("%s is not inside %s: left alone", p, dir))
			continue
		}
		if m := mountedUnder(mounts, p); m != "" {
			errs = append(errs, fmt.Errorf("%s has a file system mounted at %s: left alone (unmount it and run down again)", p, m))
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if st.CreatedDir || len(st.Paths) == 0 {
		// Only if empty: someone else's files are never removed.
		_ = os.Remove(dir)
	}
	return errors.Join(errs...)
}

// onlyMachines reports whether dir holds machine directories and
// nothing else.
func onlyMachines(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if !e.IsDir() || !exists(filepath.Join(dir, e.Name(), machineDisk)) {
			return false
		}
	}
	return true
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// mountPoints lists the mount points of this mount namespace.
func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountedUnder returns a mount point at or under p, or "".
func mountedUnder(mounts []string, p string) string {
	for _, m := range mounts {
		if m == p || strings.HasPrefix(m, p+"/") {
			return m
		}
	}
	return ""
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func uniqueProcs(ps []Process) []Process {
	seen := map[int]bool{}
	var out []Process
	for _, p := range ps {
		if !seen[p.PID] {
			seen[p.PID] = true
			out = append(out, p)
		}
	}
	return out
}

func pids(ps []Process) string {
	var s []string
	for _, p := range ps {
		s = append(s, strconv.Itoa(p.PID))
	}
	return "pid " + strings.Join(s, ", ")
}
