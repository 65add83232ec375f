// Package pki is the control plane's certificate authority: it creates and
// loads the CA and issues the serving certificates the API server presents
// to clients and the peer certificates etcd members present to each other.
//
// The first server of a lab creates the CA with NewCA and stores its
// certificate and key in etcd, so every server of an HA control plane signs
// with the same CA and a client that trusts it (see CA.Pool) can talk to any
// of them. A server with an embedded etcd member also keeps the CA in its
// data directory (WriteCAFiles, LoadCAFiles), because the member needs it
// before etcd runs: it issues the member's peer certificate
// (LoadOrCreatePeer, common name PeerCommonName) and verifies the peers'.
// Each server then issues its own serving certificate, for its own names
// and addresses (see SANs), with LoadOrCreateServing, which keeps the
// certificate on disk and reissues it only when it is about to expire, was
// signed by another CA or lacks a wanted name.
//
// Keys are ECDSA P-256, written readable by their owner only, and only the
// standard library is used.
package pki
