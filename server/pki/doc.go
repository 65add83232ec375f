// Package pki is the control plane's certificate authority: it creates and
// loads the CA and issues the serving certificates the API server (and
// etcd, for peer TLS) present to clients.
//
// The first server of a lab creates the CA with NewCA and stores its
// certificate and key in etcd, so every server of an HA control plane signs
// with the same CA and a client that trusts it (see CA.Pool) can talk to any
// of them. Each server then issues its own serving certificate, for its own
// names and addresses (see SANs), with LoadOrCreateServing, which keeps the
// certificate on disk and reissues it only when it is about to expire, was
// signed by another CA or lacks a wanted name.
//
// Keys are ECDSA P-256 and only the standard library is used.
package pki
