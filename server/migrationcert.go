package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server/auth"
)

// Live migration's certificates (pki/migration.go says why the
// migration CA is a CA of its own). The CA lives in etcd at
// migrationCAKey, made by the first server that needs it, so every
// server signs with the same one. A host asks for its certificate with
// its own credential, for its own key (a certificate request), and gets
// one for its name and its Host's spec.address only: what the host
// claims in the request is ignored.

const migrationCAKey = "/hearth/pki/migration-ca"

// migrationCertValidity is how long a host's migration certificate is
// good; the agent asks again after two thirds of it.
const migrationCertValidity = 30 * 24 * time.Hour

// migrationCA is the server's copy of the cluster's migration CA, read
// (or made) on first use.
type migrationCA struct {
	mu sync.Mutex
	ca *pki.CA
}

func (s *Server) migrationCA(ctx context.Context) (*pki.CA, error) {
	s.migCA.mu.Lock()
	defer s.migCA.mu.Unlock()
	if s.migCA.ca != nil {
		return s.migCA.ca, nil
	}
	type stored struct{ Cert, Key string }
	for {
		resp, err := s.etcd.Get(ctx, migrationCAKey)
		if err != nil {
			return nil, api.NewUnavailable("reading the migration CA from etcd: %v", err)
		}
		if len(resp.Kvs) > 0 {
			var st stored
			if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
				return nil, api.NewInternal("the migration CA in etcd is corrupt: %v", err)
			}
			ca, err := pki.ParseCA([]byte(st.Cert), []byte(st.Key))
			if err != nil {
				return nil, api.NewInternal("the migration CA in etcd: %v", err)
			}
			s.migCA.ca = ca
			return ca, nil
		}
		ca, err := pki.NewMigrationCA(caLifetime)
		if err != nil {
			return nil, err
		}
		data, _ := json.Marshal(stored{Cert: string(ca.CertPEM), Key: string(ca.KeyPEM)})
		tr, err := s.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(migrationCAKey), "=", 0)).
			Then(clientv3.OpPut(migrationCAKey, string(data))).Commit()
		if err != nil {
			return nil, api.NewUnavailable("storing the migration CA: %v", err)
		}
		if tr.Succeeded {
			s.migCA.ca = ca
			return ca, nil
		}
		// Another server made it first: read theirs.
	}
}

// serveMigrationCert signs a host's migration certificate.
func (s *Server) serveMigrationCert(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	name := r.PathValue("name")
	if p.Host == "" || p.Host != name {
		return api.NewForbidden("%s may not have a migration certificate signed for host %s: only that host's own credential may", p.Name, name)
	}
	data, err := readBody(r)
	if err != nil {
		return err
	}
	var req api.MigrationCertRequest
	if err := api.DecodeInto(data, &req); err != nil {
		return api.NewBadRequest("migration certificate request: %v", err)
	}
	hk, _ := api.KindByName("Host")
	obj, err := s.store.Get(r.Context(), hk, "", name)
	if err != nil {
		return err
	}
	h := obj.(*api.Host)
	addr := net.ParseIP(h.Spec.Address)
	if addr == nil {
		var es api.FieldErrors
		es.Add("spec.address", "host %s has no underlay address (%q): a migration certificate is for the address other hosts reach it at; a cluster admin sets it", name, h.Spec.Address)
		return api.NewInvalid("Host", name, es)
	}
	ca, err := s.migrationCA(r.Context())
	if err != nil {
		return err
	}
	cert, err := ca.IssueMigration(name, addr, req.CSR, migrationCertValidity)
	if err != nil {
		var es api.FieldErrors
		es.Add("csr", "%v", err)
		return api.NewInvalid("Host", name, es)
	}
	writeJSON(w, http.StatusOK, api.MigrationCertResponse{Certificate: string(cert), CA: string(ca.CertPEM),
		NotAfter: time.Now().Add(migrationCertValidity).UTC().Format(time.RFC3339)})
	return nil
}
