package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"strings"
)

// ErrAccess is what a Resolver returns (wrapped or not) to refuse a file the
// client may not have; the client gets TFTP error 2, "access violation".
var ErrAccess = errors.New("access violation")

// Resolver opens the file a client asked for and reports its size (-1 when
// unknown; the tsize option is then not answered). The path it gets is
// already clean: relative, slash-separated, without "." or ".." elements —
// see cleanPath. An error wrapping fs.ErrNotExist becomes "file not found"
// for the client, one wrapping ErrAccess or fs.ErrPermission "access
// violation", anything else a generic error. The client address lets the
// boot service generate per-machine files. It is called concurrently.
type Resolver func(ctx context.Context, path string, client netip.AddrPort) (io.ReadSeekCloser, int64, error)

// cleanPath turns a file name as firmware sends it into a path relative to
// the served root. Firmware often sends "/undionly.kpxe", and Windows-era
// tools "\pxelinux.0" or "boot\bcd", so backslashes become slashes and
// leading slashes are dropped. A name that would climb out of the root
// ("../../etc/passwd", "/../etc/passwd", "a/../../b") is refused with
// ErrAccess rather than clamped to the root, so probing shows up as such.
func cleanPath(name string) (string, error) {
	p := strings.ReplaceAll(name, `\`, "/")
	p = path.Clean(strings.TrimLeft(p, "/"))
	switch {
	case p == ".." || strings.HasPrefix(p, "../"):
		return "", fmt.Errorf("%w: %q leads outside the served root", ErrAccess, name)
	case p == ".":
		return "", fmt.Errorf("%w: %q names the root directory, not a file", ErrAccess, name)
	}
	return p, nil
}

// DirResolver serves the regular files under dir. It opens them through
// os.Root, so neither ".." nor a symlink can reach outside dir: a symlink
// that stays inside dir is followed, one that leads out is refused with
// ErrAccess. Note that Debian's /usr/lib/ipxe/ipxe.efi is such a symlink (to
// /boot/ipxe.efi); serve the iPXE binaries with Files instead.
func DirResolver(dir string) Resolver {
	return func(_ context.Context, name string, _ netip.AddrPort) (io.ReadSeekCloser, int64, error) {
		rel, err := cleanPath(name)
		if err != nil {
			return nil, 0, err
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			return nil, 0, fmt.Errorf("open tftp root: %w", err)
		}
		defer root.Close() // files opened through it stay open
		f, err := root.Open(rel)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, 0, err
			}
			// os.Root reports an escape with an unexported error; every
			// other failure to open is a refusal too.
			return nil, 0, fmt.Errorf("%w: %w", ErrAccess, err)
		}
		return regularFile(f)
	}
}

// Files serves exactly the given files: keys are the names clients ask for
// (cleaned like requests, so "/undionly.kpxe" and "undionly.kpxe" are the
// same), values are host paths. Unlike DirResolver it follows symlinks
// anywhere, because the operator chose each path; that is what Debian's
// ipxe package needs. Anything not listed is "file not found".
func Files(files map[string]string) Resolver {
	table := make(map[string]string, len(files))
	for name, host := range files {
		if rel, err := cleanPath(name); err == nil {
			table[rel] = host
		}
	}
	return func(_ context.Context, name string, _ netip.AddrPort) (io.ReadSeekCloser, int64, error) {
		rel, err := cleanPath(name)
		if err != nil {
			return nil, 0, err
		}
		host, ok := table[rel]
		if !ok {
			return nil, 0, fmt.Errorf("%q: %w", name, fs.ErrNotExist)
		}
		f, err := os.Open(host)
		if err != nil {
			return nil, 0, err
		}
		return regularFile(f)
	}
}

// Chain asks each resolver in turn and returns the first answer that is not
// "file not found". A refusal (ErrAccess) is final: a later resolver does not
// get to serve a name an earlier one refused.
func Chain(resolvers ...Resolver) Resolver {
	return func(ctx context.Context, name string, client netip.AddrPort) (io.ReadSeekCloser, int64, error) {
		err := error(fs.ErrNotExist)
		for _, r := range resolvers {
			var f io.ReadSeekCloser
			var size int64
			f, size, err = r(ctx, name, client)
			if !errors.Is(err, fs.ErrNotExist) {
				return f, size, err
			}
		}
		return nil, 0, err
	}
}

// regularFile returns f and its size if it is a regular file, and refuses
// directories, devices and the like.
func regularFile(f *os.File) (io.ReadSeekCloser, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is not a regular file", ErrAccess, fi.Name())
	}
	return f, fi.Size(), nil
}
