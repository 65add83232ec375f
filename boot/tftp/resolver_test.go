package tftp

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// escapeRoot is a served root with symlinks: some stay inside, some lead out.
func escapeRoot(t *testing.T) string {
	t.Helper()
	root := writeFiles(t, map[string][]byte{"ok.bin": []byte("inside"), "sub/deep.bin": []byte("deep")})
	outside := writeFiles(t, map[string][]byte{"secret": []byte("outside")})
	for link, target := range map[string]string{
		"inner-link":  "sub/deep.bin",
		"passwd-link": "/etc/passwd",
		"rel-escape":  "../" + filepath.Base(outside) + "/secret", // t.TempDir()s are siblings
		"abs-escape":  filepath.Join(outside, "secret"),
		"etc":         "/etc",
		"dangling":    "nowhere",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "sub", "up")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestDirResolver(t *testing.T) {
	resolve := DirResolver(escapeRoot(t))
	for _, tc := range []struct {
		path, want string
		wantErr    error
	}{
		{path: "ok.bin", want: "inside"},
		{path: "/ok.bin", want: "inside"},
		{path: `sub\deep.bin`, want: "deep"},
		{path: "inner-link", want: "deep"},
		{path: "missing", wantErr: fs.ErrNotExist},
		{path: "dangling", wantErr: fs.ErrNotExist},
		{path: "../../etc/passwd", wantErr: ErrAccess},
		{path: "/../etc/passwd", wantErr: ErrAccess},
		{path: "passwd-link", wantErr: ErrAccess},
		{path: "abs-escape", wantErr: ErrAccess},
		{path: "rel-escape", wantErr: ErrAccess},
		{path: "sub/up", wantErr: ErrAccess},
		{path: "etc/passwd", wantErr: ErrAccess},
		{path: "sub", wantErr: ErrAccess},
	} {
		t.Run(tc.path, func(t *testing.T) {
			f, size, err := resolve(context.Background(), tc.path, netip.AddrPort{})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			if string(b) != tc.want || size != int64(len(tc.want)) {
				t.Errorf("got %q (size %d), want %q", b, size, tc.want)
			}
		})
	}
}

func TestFilesAndChain(t *testing.T) {
	dir := writeFiles(t, map[string][]byte{"a": []byte("A"), "b": []byte("B")})
	// Files follows a symlink anywhere: the operator chose the path.
	if err := os.Symlink(filepath.Join(dir, "a"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	files := Files(map[string]string{"/boot.efi": filepath.Join(dir, "link"), "gone": filepath.Join(dir, "gone")})
	other := writeFiles(t, map[string][]byte{"boot.efi": []byte("shadowed"), "x": []byte("X")})
	resolve := Chain(files, DirResolver(other))
	for _, tc := range []struct {
		path, want string
		wantErr    error
	}{
		{path: "boot.efi", want: "A"},
		{path: `\boot.efi`, want: "A"},
		{path: "x", want: "X"},
		{path: "gone", wantErr: fs.ErrNotExist},
		{path: "nope", wantErr: fs.ErrNotExist},
		{path: "../x", wantErr: ErrAccess},
	} {
		f, _, err := resolve(context.Background(), tc.path, netip.AddrPort{})
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: got %v, want %v", tc.path, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != tc.want {
			t.Errorf("%s: got %q, want %q", tc.path, b, tc.want)
		}
	}
}
