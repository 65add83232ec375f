package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"hearth.dev/hearth/process"
	"hearth.dev/hearth/storage/nfs3"
)

// NFSTools are the programs an NFS server needs, with their Debian
// packages.
var NFSTools = map[string]string{
	"ganesha.nfsd": "nfs-ganesha (and nfs-ganesha-vfs)",
	"rpcbind":      "rpcbind",
}

// MissingNFSTool names a program of NFSTools, or Ganesha's VFS backend,
// that is not installed, with its package; or returns "".
func MissingNFSTool() (tool, pkg string) {
	for tool, pkg := range NFSTools {
		if _, err := exec.LookPath(tool); err != nil {
			return tool, pkg
		}
	}
	if matches, _ := filepath.Glob("/usr/lib/*/ganesha/libfsalvfs.so"); len(matches) == 0 {
		return "Ganesha's VFS backend (libfsalvfs.so)", "nfs-ganesha-vfs"
	}
	return "", ""
}

// ExportPath is the path NFS clients mount (Ganesha's pseudo path).
const ExportPath = "/export"

// NFSOptions say where an NFS server runs.
type NFSOptions struct {
	// Dir is an existing directory, only the server's: its
	// configuration and logs, and the exported directory Dir/export.
	Dir string
	// Netns is the network namespace the server runs in. It is
	// required: NFSv3 clients find the server through a portmapper on
	// port 111, which cannot move, so every server needs a namespace of
	// its own.
	Netns string
	// Address is the server's address in Netns, which clients reach
	// (the starter too: StartNFS waits until it can mount the export).
	Address string
}

// NFS is a running NFS server: NFS-Ganesha (Debian's nfs-ganesha and
// nfs-ganesha-vfs) with rpcbind, exporting Dir/export over NFSv3.
//
// This machine's kernel has no nfsd (nor an NFS client), so the server is
// Ganesha, in userspace. It runs in a private mount namespace whose /run
// and /var/lib/nfs are tmpfs of its own, so its rpcbind socket and state
// files never meet the machine's or another server's, and vanish with it.
type NFS struct {
	// Dir holds the configuration and logs.
	Dir string
	// Export is the exported directory, as this machine sees it.
	Export string
	// Host is the server's address, which clients reach.
	Host string
	// Path is what clients mount: ExportPath.
	Path string
	// Process is the server's (Ganesha's; rpcbind is in its process
	// group).
	Process process.ID
}

// StartNFS starts a server as opts say and waits until a client can mount
// its export. On failure it stops what it started and the error ends with
// the server's last log lines.
func StartNFS(ctx context.Context, opts NFSOptions) (*NFS, error) {
	if tool, pkg := MissingNFSTool(); tool != "" {
		return nil, fmt.Errorf("%s not found: install Debian's %s", tool, pkg)
	}
	if opts.Netns == "" {
		return nil, fmt.Errorf("nfs: a network namespace of the server's own is required (the portmapper's port 111 cannot move)")
	}
	if ip := net.ParseIP(opts.Address); ip == nil || ip.To4() == nil {
		return nil, fmt.Errorf("nfs: address %q is not an IPv4 address", opts.Address)
	}
	s := &NFS{Dir: opts.Dir, Export: filepath.Join(opts.Dir, "export"), Host: opts.Address, Path: ExportPath}
	if err := s.start(ctx, opts.Netns); err != nil {
		err = fmt.Errorf("nfs: %w%s", err, logTail(filepath.Join(s.Dir, "log"), 10))
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *NFS) start(ctx context.Context, nsName string) error {
	for _, d := range []string{s.Export, filepath.Join(s.Dir, "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	conf := `NFS_CORE_PARAM {
	Protocols = 3;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = true; }
EXPORT {
	Export_Id = 1;
	Path = "` + s.Export + `";
	Pseudo = "` + ExportPath + `";
	Access_Type = RW;
	Squash = No_Root_Squash;
	SecType = sys;
	Protocols = 3;
	Transports = TCP;
	FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
`
	confPath := filepath.Join(s.Dir, "ganesha.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	// rpcbind first, in the background; Ganesha registers with it (over
	// loopback: its socket in the private /run is rpcbind's) and then
	// takes the shell's place.
	script := `set -e
mount -t tmpfs -o mode=0755 hearth-nfs /run
mkdir -p /var/lib/nfs
mount -t tmpfs -o mode=0755 hearth-nfs /var/lib/nfs
mkdir -p /run/rpcbind /run/ganesha /var/lib/nfs/ganesha
rpcbind -f -w &
i=0
while [ ! -S /run/rpcbind.sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
exec ganesha.nfsd -F -f "$1" -L "$2" -p /run/ganesha/ganesha.pid
`
	out, err := os.OpenFile(filepath.Join(s.Dir, "log", "server.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command("/bin/sh", "-c", script, "hearth-nfs", confPath, filepath.Join(s.Dir, "log", "ganesha.log"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/"
	// A session of its own (so it outlives a starter that exits, and
	// rpcbind shares its process group), in a mount namespace of its own.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setsid: true}
	if err := startIn(nsName, cmd); err != nil {
		return fmt.Errorf("start ganesha: %w", err)
	}
	id, _ := process.Of(cmd.Process.Pid)
	s.Process = id
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Ready once a client can mount the export.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := nfs3.Dial(s.Host, s.Path)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("ganesha exited: %v", werr)
		case <-ctx.Done():
			return fmt.Errorf("the export did not become mountable: %w (%v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the export did not become mountable: %w", err)
		}
	}
}

// Alive reports whether the server still runs.
func (s *NFS) Alive() bool { return s.Process.Alive() }

// Stop kills the server and rpcbind (its process group) and waits until
// the server is gone. It leaves Dir to its owner.
func (s *NFS) Stop() error {
	if s.Process.PID > 0 && s.Process.Alive() {
		syscall.Kill(-s.Process.PID, syscall.SIGKILL)
	}
	return killAndWait([]process.ID{s.Process}, 10*time.Second)
}

// URL is the nfs:// URL of a file in the export, as libnfs (QEMU,
// qemu-img) takes it.
func (s *NFS) URL(name string) string {
	return "nfs://" + s.Host + s.Path + "/" + name
}
