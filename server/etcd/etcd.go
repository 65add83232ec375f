// Package etcd starts the control plane's etcd: an embedded member in the
// server's data directory (alone, or one of three for HA), or a client of an
// external cluster.
package etcd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

// Config says which etcd to use.
type Config struct {
	// Endpoints of an external etcd cluster. When set, nothing is embedded.
	Endpoints []string
	// DataDir holds the embedded member's data (DATA-DIR/etcd).
	DataDir string
	// Name of this member (default "default").
	Name string
	// ClientURL is where the embedded member serves etcd clients (default
	// http://127.0.0.1:2379). The API server itself talks to it in-process.
	ClientURL string
	// PeerURL is where members of an embedded cluster reach this one
	// (default http://127.0.0.1:2380).
	PeerURL string
	// InitialCluster lists every member as name=peerURL,… (default: this
	// member alone). ClusterState is "new" or "existing".
	InitialCluster string
	ClusterState   string
	// CompactionRetention keeps this much history for watches to resume
	// from (default 1h).
	CompactionRetention time.Duration
}

// Etcd is a running etcd connection, embedded or external.
type Etcd struct {
	Client *clientv3.Client
	server *embed.Etcd
}

// Start starts an embedded member or connects to an external cluster, and
// returns once it can serve requests.
func Start(ctx context.Context, cfg Config) (*Etcd, error) {
	if len(cfg.Endpoints) > 0 {
		c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, fmt.Errorf("connecting to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
		}
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if _, err := c.Status(sctx, cfg.Endpoints[0]); err != nil {
			c.Close()
			return nil, fmt.Errorf("etcd at %s does not answer: %w", cfg.Endpoints[0], err)
		}
		return &Etcd{Client: c}, nil
	}
	ec := embed.NewConfig()
	ec.Name = or(cfg.Name, "default")
	ec.Dir = filepath.Join(cfg.DataDir, "etcd")
	ec.LogLevel = "error"
	ec.Logger = "zap"
	ec.LogOutputs = []string{filepath.Join(cfg.DataDir, "etcd.log")}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	clientURL, err := url.Parse(or(cfg.ClientURL, "http://127.0.0.1:2379"))
	if err != nil {
		return nil, fmt.Errorf("--etcd-client-url: %w", err)
	}
	peerURL, err := url.Parse(or(cfg.PeerURL, "http://127.0.0.1:2380"))
	if err != nil {
		return nil, fmt.Errorf("--etcd-peer-url: %w", err)
	}
	for _, u := range []*url.URL{clientURL, peerURL} {
		if err := resolvePortZero(u); err != nil {
			return nil, err
		}
	}
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = or(cfg.InitialCluster, ec.Name+"="+peerURL.String())
	ec.ClusterState = or(cfg.ClusterState, embed.ClusterStateFlagNew)
	ec.InitialClusterToken = "hearth"
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = or(durationString(cfg.CompactionRetention), "1h")
	// A member restarting into an existing data directory ignores the
	// initial-cluster settings, as etcd always does.
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd in %s: %w", ec.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(5 * time.Minute):
		e.Close()
		return nil, fmt.Errorf("embedded etcd did not become ready in 5 minutes (are the other members of --etcd-initial-cluster up?)")
	}
	// The API server calls its member directly, not through gRPC over a
	// socket: no marshalling, no loopback round trip. Writes still go
	// through raft (forwarded to the leader in a cluster).
	return &Etcd{Client: v3client.New(e.Server), server: e}, nil
}

// Embedded reports whether this process runs an etcd member.
func (e *Etcd) Embedded() bool { return e.server != nil }

// Close stops the client and, if embedded, the member.
func (e *Etcd) Close() {
	e.Client.Close()
	if e.server != nil {
		e.server.Close()
	}
}

// resolvePortZero replaces port 0 with a port free right now, since etcd
// advertises the URLs it listens on and cannot advertise port 0. It lets
// several servers share a machine without anyone picking ports.
func resolvePortZero(u *url.URL) error {
	if u.Port() != "0" {
		return nil
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		return fmt.Errorf("finding a free port for %s: %w", u, err)
	}
	defer l.Close()
	u.Host = l.Addr().String()
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
