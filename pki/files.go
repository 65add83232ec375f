package pki

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"hearth.dev/hearth/atomicfile"
)

// Names of the cluster CA's files in a server's pki directory
// (DATA-DIR/pki). An embedded etcd member needs the CA before etcd runs,
// to issue its peer certificate and to verify its peers', so the CA lives
// in these files as well as in etcd.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// LoadCAFiles reads the CA kept in dir (CACertFile and CAKeyFile). It
// returns nil and no error when neither file exists. A key file that
// others than its owner may read is refused, as is a directory others may
// enter: the CA key signs every certificate of the cluster.
func LoadCAFiles(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil
	case errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("%s exists but %s does not: restore the key, or remove both to start a new cluster", certPath, keyPath)
	case errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("%s exists but %s does not: restore the certificate", keyPath, certPath)
	case certErr != nil:
		return nil, fmt.Errorf("read CA certificate: %w", certErr)
	case keyErr != nil:
		return nil, fmt.Errorf("read CA key: %w", keyErr)
	}
	if err := CheckPrivate(dir); err != nil {
		return nil, err
	}
	if err := CheckPrivate(keyPath); err != nil {
		return nil, err
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certPath, keyPath, err)
	}
	return ca, nil
}

// ReadCA reads a CA from the certificate and key files a person gave
// (hearth server --ca-cert/--ca-key), as written by WriteCAFiles or made
// with openssl.
func ReadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certPath, keyPath, err)
	}
	return ca, nil
}

// WriteCAFiles writes ca to dir as CACertFile (0644) and CAKeyFile (0600),
// creating dir (0700) if needed. Each file is replaced atomically; the key
// goes first, so a certificate on disk always has its key beside it.
func WriteCAFiles(dir string, ca *CA) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, CAKeyFile), ca.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, CACertFile), ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("write CA certificate: %w", err)
	}
	return nil
}

// Same reports whether a and b are the same CA (the same certificate).
func (ca *CA) Same(other *CA) bool {
	return ca != nil && other != nil && bytes.Equal(ca.Cert.Raw, other.Cert.Raw)
}

// PrivateDir makes dir (0700), or checks that an existing one lets no one
// but its owner in. An empty directory that others may enter is made
// private (a fresh temporary directory, a mount point), since nothing in it
// can be relying on the wider mode; one that holds something is refused,
// so a mistaken path such as a home directory is never changed.
func PrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	err := CheckPrivate(dir)
	if err == nil {
		return nil
	}
	entries, rerr := os.ReadDir(dir)
	if rerr != nil || len(entries) > 0 {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// CheckPrivate returns an error naming path and the fix when path (a key
// file or a directory holding keys) may be read by anyone but its owner:
// its mode has group or other bits.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		return fmt.Errorf("%s has mode %#o, which lets other users read it; it holds private keys: chmod %#o %s", path, perm, want, path)
	}
	return nil
}
