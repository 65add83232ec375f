package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"hearth.dev/hearth/pki"
)

// The cluster CA lives in two places. etcd holds it at caKey, so servers
// of an external etcd share it and every server can check it has the
// right one. An embedded member also needs it before etcd runs, to issue
// its peer certificate and verify its peers', so such a server keeps it in
// DATA-DIR/pki (pki.CACertFile, pki.CAKeyFile) too. The first start of a
// lone server makes it; the members of an HA control plane are all given
// the same one (--ca-cert, --ca-key) for their first start, as made by
// `hearth server ca create`, and copy it into their data directories.

const caKey = "/hearth/pki/ca"

// caLifetime is how long a CA made by a server or `hearth server ca
// create` is valid.
const caLifetime = 10 * 365 * 24 * time.Hour

// NewClusterCA makes a new cluster CA.
func NewClusterCA() (*pki.CA, error) { return pki.NewCA("hearth-ca", caLifetime) }

// givenCA reads --ca-cert and --ca-key, or returns nil when neither is set.
func (cfg *Config) givenCA() (*pki.CA, error) {
	if cfg.CACertFile == "" && cfg.CAKeyFile == "" {
		return nil, nil
	}
	if cfg.CACertFile == "" || cfg.CAKeyFile == "" {
		return nil, errors.New("--ca-cert and --ca-key go together: give both, or neither")
	}
	ca, err := pki.ReadCA(cfg.CACertFile, cfg.CAKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert, --ca-key: %w", err)
	}
	return ca, nil
}

// memberCA returns the CA an embedded member starts etcd with. migrate is
// true for the data directory of a lone server from before the CA was kept
// in files: its CA is only in etcd, so etcd starts with a throwaway CA for
// its peer port (a lone member has no peers) and the real one is read
// from etcd and written to files once it runs.
func (cfg *Config) memberCA() (ca *pki.CA, migrate bool, err error) {
	dir := filepath.Join(cfg.DataDir, "pki")
	given, err := cfg.givenCA()
	if err != nil {
		return nil, false, err
	}
	have, err := pki.LoadCAFiles(dir)
	if err != nil {
		return nil, false, err
	}
	switch {
	case have != nil && given != nil && !have.Same(given):
		return nil, false, fmt.Errorf("--ca-cert %s is not the CA this server already has (%s): give the cluster's CA, or leave out --ca-cert and --ca-key", cfg.CACertFile, filepath.Join(dir, pki.CACertFile))
	case have != nil:
		return have, false, nil
	case given != nil:
		if err := pki.WriteCAFiles(dir, given); err != nil {
			return nil, false, err
		}
		return given, false, nil
	}
	members := memberNames(cfg.Etcd.InitialCluster)
	_, err = os.Stat(filepath.Join(cfg.DataDir, "etcd", "member"))
	existing := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	switch {
	case members > 1 && existing:
		return nil, false, fmt.Errorf("%s holds etcd data of a member from before members spoke TLS to each other, and no CA: an HA control plane from then cannot move to peer TLS in place (see docs/INSTALL.md, Upgrades)", cfg.DataDir)
	case members > 1:
		return nil, false, fmt.Errorf("--etcd-initial-cluster names %d members: they must share one CA, which issues the certificates they show each other; make it once with `hearth server ca create DIR` and give every member --ca-cert DIR/ca.crt --ca-key DIR/ca.key", members)
	case existing:
		tmp, err := pki.NewCA("hearth-migration-peer-ca", 24*time.Hour)
		return tmp, true, err
	}
	ca, err = NewClusterCA()
	if err != nil {
		return nil, false, err
	}
	if err := pki.WriteCAFiles(dir, ca); err != nil {
		return nil, false, err
	}
	return ca, false, nil
}

// memberNames counts the members of an --etcd-initial-cluster value
// (name=URL,… where a name may have several URLs).
func memberNames(initialCluster string) int {
	names := map[string]bool{}
	for _, entry := range strings.Split(initialCluster, ",") {
		if name, _, ok := strings.Cut(strings.TrimSpace(entry), "="); ok {
			names[name] = true
		}
	}
	return len(names)
}

// loadOrCreateCA reads the cluster CA from etcd, storing want (or a new
// CA) if this is the first server, so every server shares it. A server
// whose CA (from its files or --ca-cert) is not the one in etcd stops
// here, before it issues anything.
func (s *Server) loadOrCreateCA(ctx context.Context, want *pki.CA) (*pki.CA, error) {
	type stored struct{ Cert, Key string }
	for {
		resp, err := s.etcd.Get(ctx, caKey)
		if err != nil {
			return nil, fmt.Errorf("reading the CA from etcd: %w", err)
		}
		if len(resp.Kvs) > 0 {
			var st stored
			if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
				return nil, fmt.Errorf("the CA in etcd is corrupt: %w", err)
			}
			ca, err := pki.ParseCA([]byte(st.Cert), []byte(st.Key))
			if err != nil {
				return nil, fmt.Errorf("the CA in etcd: %w", err)
			}
			if want != nil && !want.Same(ca) {
				return nil, fmt.Errorf("this server's CA (%s, or --ca-cert) is not the cluster's CA stored in etcd at %s: give it the cluster's CA", filepath.Join(s.cfg.DataDir, "pki", pki.CACertFile), caKey)
			}
			return ca, nil
		}
		ca := want
		if ca == nil {
			if ca, err = NewClusterCA(); err != nil {
				return nil, err
			}
		}
		data, _ := json.Marshal(stored{Cert: string(ca.CertPEM), Key: string(ca.KeyPEM)})
		tr, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(caKey), "=", 0)).
			Then(clientv3.OpPut(caKey, string(data))).Commit()
		if err != nil {
			return nil, fmt.Errorf("storing the CA: %w", err)
		}
		if tr.Succeeded {
			return ca, nil
		}
		// Another server created it first: use theirs (or refuse, if we
		// were given another).
	}
}
