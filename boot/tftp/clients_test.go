package tftp

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests run the TFTP clients Debian ships against the server on
// 127.0.0.1: tftp-hpa's tftp and atftp (apt-get install tftp-hpa atftp). A
// missing client skips its cases.

// client is one real TFTP client and how to drive it.
type client struct {
	name, bin, pkg string
	// get returns the arguments to fetch remote; with trace, a client that
	// can prints the packets it exchanges.
	get func(port, remote, local string, opts []string, trace bool) []string
	put func(port, local, remote string) []string
	// exitsZeroOnError: tftp-hpa 5.2 exits 0 even when the server answers
	// with an error, so its message is the only sign of failure.
	exitsZeroOnError bool
}

var (
	tftpHPA = client{
		name: "tftp-hpa", bin: "tftp", pkg: "tftp-hpa", exitsZeroOnError: true,
		get: func(port, remote, local string, opts []string, _ bool) []string {
			mode := "binary"
			if len(opts) > 0 {
				mode = opts[0] // tftp-hpa sends no options; the one knob is the mode
			}
			return []string{"127.0.0.1", port, "-m", mode, "-c", "get", remote, local}
		},
		put: func(port, local, remote string) []string {
			return []string{"127.0.0.1", port, "-m", "binary", "-c", "put", local, remote}
		},
	}
	atftp = client{
		name: "atftp", bin: "atftp", pkg: "atftp",
		get: func(port, remote, local string, opts []string, trace bool) []string {
			args := []string{"--tftp-timeout", "1", "--get", "-r", remote, "-l", local}
			if trace {
				args = append(args, "--trace")
			}
			for _, o := range opts {
				args = append(args, "--option", o)
			}
			return append(args, "127.0.0.1", port)
		},
		put: func(port, local, remote string) []string {
			return []string{"--put", "-l", local, "-r", remote, "127.0.0.1", port}
		},
	}
)

// run runs c with args, and returns its combined output and whether it
// exited zero. It skips the test if c is not installed.
func (c client) run(t *testing.T, args []string) (string, bool) {
	t.Helper()
	path, err := exec.LookPath(c.bin)
	if err != nil {
		t.Skipf("%s not found: install Debian's %s package (apt-get install %s)", c.bin, c.pkg, c.pkg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %s: %v", c.bin, err)
	}
	return string(out), err == nil
}

// getFile fetches remote with c and returns the file it wrote and the
// client's output, with a packet trace if the client can give one.
func (c client) getFile(t *testing.T, port, remote string, trace bool, opts ...string) ([]byte, string) {
	t.Helper()
	local := filepath.Join(t.TempDir(), "out")
	out, ok := c.run(t, c.get(port, remote, local, opts, trace))
	if !ok || strings.Contains(strings.ToLower(out), "error") {
		t.Fatalf("%s get %s %v failed:\n%s", c.name, remote, opts, out)
	}
	b, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	return b, out
}

func portOf(t testing.TB, s *Server) string {
	return strconv.Itoa(startServer(t, s).Port)
}

func TestRealClients(t *testing.T) {
	small := randomBytes(3000, 10)
	text := []byte("#!ipxe\r\nline one\nbare CR\r here\n\n\x00end\r")
	files := map[string][]byte{"small.bin": small, "pxelinux.cfg/default": text}
	var big []byte
	if !testing.Short() {
		// More than 65535 blocks of 512 bytes: block numbers roll over.
		big = randomBytes(65535*512+1000, 11)
		files["big.bin"] = big
	}
	root := writeFiles(t, files)
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "passwd-link")); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	port := portOf(t, &Server{Resolver: DirResolver(root), Observe: rec.observe})

	for _, tc := range []struct {
		c      client
		remote string
		opts   []string
		want   []byte
		big    bool
		oack   []string // what atftp's trace must show of the OACK
	}{
		{c: tftpHPA, remote: "small.bin", want: small},
		{c: tftpHPA, remote: "/small.bin", want: small},
		{c: tftpHPA, remote: "pxelinux.cfg/default", opts: []string{"netascii"}, want: text},
		{c: atftp, remote: "small.bin", want: small},
		{c: atftp, remote: `\small.bin`, opts: []string{"tsize", "blksize 1428"}, want: small,
			oack: []string{"tsize: 3000", "blksize: 1428"}},
		{c: atftp, remote: "small.bin", opts: []string{"windowsize 4", "blksize 8", "timeout 2"}, want: small,
			oack: []string{"windowsize: 4", "blksize: 8", "timeout: 2"}},
		{c: tftpHPA, remote: "big.bin", want: big, big: true},
		{c: atftp, remote: "big.bin", opts: []string{"blksize 1428", "tsize enable"}, want: big, big: true},
		{c: atftp, remote: "big.bin", opts: []string{"windowsize 4"}, want: big, big: true},
	} {
		t.Run(tc.c.name+" "+tc.remote+" "+strings.Join(tc.opts, ","), func(t *testing.T) {
			if tc.big && testing.Short() {
				t.Skip("large file skipped in -short mode")
			}
			got, out := tc.c.getFile(t, port, tc.remote, tc.oack != nil, tc.opts...)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %d bytes, want %d bytes identical to the served file", len(got), len(tc.want))
			}
			for _, want := range tc.oack {
				if !strings.Contains(out, want) {
					t.Errorf("OACK does not show %q; client trace:\n%s", want, out)
				}
			}
			ev := rec.last(t)
			if ev.Kind != EventCompleted || ev.Path != tc.remote {
				t.Errorf("event %s for %q (%v), want completed for %q", ev.Kind, ev.Path, ev.Err, tc.remote)
			}
		})
	}

	for _, tc := range []struct {
		name, remote string
		upload       bool
		wantText     string
	}{
		{name: "missing", remote: "nope.bin", wantText: "file not found"},
		{name: "dot-dot", remote: "../../etc/passwd", wantText: "access violation"},
		{name: "rooted dot-dot", remote: "/../etc/passwd", wantText: "access violation"},
		{name: "symlink out", remote: "passwd-link", wantText: "access violation"},
		{name: "upload", remote: "new.bin", upload: true, wantText: "uploads are refused"},
		{name: "upload over a file", remote: "small.bin", upload: true, wantText: "uploads are refused"},
	} {
		for _, c := range []client{tftpHPA, atftp} {
			t.Run(c.name+" "+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				local := filepath.Join(dir, "local")
				var args []string
				if tc.upload {
					if err := os.WriteFile(local, []byte("upload"), 0o644); err != nil {
						t.Fatal(err)
					}
					args = c.put(port, local, tc.remote)
				} else {
					args = c.get(port, tc.remote, local, nil, false)
				}
				out, ok := c.run(t, args)
				if ok && !c.exitsZeroOnError {
					t.Errorf("%s exited 0, want failure; output:\n%s", c.name, out)
				}
				if b, _ := os.ReadFile(local); !tc.upload && len(b) > 0 {
					t.Errorf("%s wrote %d bytes to %s, want nothing", c.name, len(b), local)
				}
				if !strings.Contains(strings.ToLower(out), tc.wantText) {
					t.Errorf("output does not mention %q:\n%s", tc.wantText, out)
				}
				if got, err := os.ReadFile(filepath.Join(root, "small.bin")); err != nil || !bytes.Equal(got, small) {
					t.Errorf("served file changed: %v", err)
				}
				if _, err := os.Stat(filepath.Join(root, "new.bin")); err == nil {
					t.Errorf("upload created a file")
				}
				if ev := rec.last(t); ev.Kind != EventError || ev.Path != tc.remote {
					t.Errorf("event %s for %q, want error for %q", ev.Kind, ev.Path, tc.remote)
				}
			})
		}
	}
}

// TestIPXE serves the iPXE binaries of Debian's ipxe package the way the
// boot service does, and checks clients get them byte for byte.
func TestIPXE(t *testing.T) {
	const dir = "/usr/lib/ipxe"
	names := []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}
	files := map[string]string{}
	want := map[string][]byte{}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Skipf("Debian's ipxe package is not installed (apt-get install ipxe): %v", err)
		}
		files[name], want[name] = filepath.Join(dir, name), b
	}
	port := portOf(t, &Server{Resolver: Files(files)})

	for _, tc := range []struct {
		c      client
		remote string
		opts   []string
	}{
		{tftpHPA, "/undionly.kpxe", nil},                                   // leading slash, as PXE ROMs send it
		{atftp, "undionly.kpxe", []string{"blksize 1432", "tsize enable"}}, // what iPXE and most PXE ROMs ask for
		{atftp, "ipxe.efi", []string{"blksize 1468", "windowsize 8"}},
		{tftpHPA, "snponly.efi", nil},
	} {
		t.Run(tc.c.name+" "+tc.remote, func(t *testing.T) {
			got, _ := tc.c.getFile(t, port, tc.remote, false, tc.opts...)
			if name := strings.TrimPrefix(tc.remote, "/"); !bytes.Equal(got, want[name]) {
				t.Fatalf("got %d bytes, want the %d bytes of %s", len(got), len(want[name]), filepath.Join(dir, name))
			}
		})
	}

	// Why Files and not DirResolver: Debian's ipxe.efi is a symlink out of
	// /usr/lib/ipxe (to /boot/ipxe.efi), which DirResolver refuses.
	if target, err := os.Readlink(filepath.Join(dir, "ipxe.efi")); err == nil && filepath.IsAbs(target) {
		_, _, err := DirResolver(dir)(context.Background(), "ipxe.efi", netip.AddrPort{})
		if !errors.Is(err, ErrAccess) && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("DirResolver(%s) opened ipxe.efi through its symlink to %s: %v", dir, target, err)
		}
	}
}
