// Package etcd starts the control plane's etcd: an embedded member in the
// server's data directory (alone, or one of three for HA), or a client of an
// external cluster.
//
// An embedded member has no TCP client port. It serves etcd clients only on
// a unix socket in the data directory (SocketPath), mode 0600 in a 0700
// directory, so only its owner (root, for a system install) can use it;
// the API server itself calls the member in-process. Members talk to each
// other over mutual TLS only, even on loopback: a peer port speaks raft, and
// whoever can send raft messages can write to the store. Each member's peer
// certificate is issued from the cluster CA for the host of its peer URL,
// with the common name pki.PeerCommonName, and a member accepts a peer only
// with such a certificate, in both directions.
package etcd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"

	"hearth.dev/hearth/pki"
)

// Config says which etcd to use.
type Config struct {
	// Endpoints of an external etcd cluster. When set, nothing is embedded.
	Endpoints []string
	// CAFile, CertFile and KeyFile are how to reach an external cluster
	// over TLS (--etcd-cafile, --etcd-certfile, --etcd-keyfile): the CA
	// its servers' certificates come from (default: the system's), and
	// this server's client certificate and key.
	CAFile, CertFile, KeyFile string
	// DataDir holds the embedded member's data (DATA-DIR/etcd), its client
	// socket (SocketPath) and its peer certificate (DATA-DIR/pki).
	DataDir string
	// Name of this member (default "default").
	Name string
	// PeerURL is where members of an embedded cluster reach this one
	// (default https://127.0.0.1:2380). It must be https, and its host
	// this member's own address: the peer certificate is issued for it.
	PeerURL string
	// InitialCluster lists every member as name=peerURL,… (default: this
	// member alone). ClusterState is "new" or "existing".
	InitialCluster string
	ClusterState   string
	// CA is the cluster CA: it issues this member's peer certificate, and
	// peers must show a certificate from it. Required when embedded.
	CA *pki.CA
	// CompactionRetention keeps this much history for watches to resume
	// from (default 1h).
	CompactionRetention time.Duration
}

// DefaultPeerURL is where a member listens for peers unless told.
const DefaultPeerURL = "https://127.0.0.1:2380"

// SocketPath is where the embedded member of the server with dataDir
// serves etcd clients (etcdctl --endpoints unix://PATH).
func SocketPath(dataDir string) string { return filepath.Join(dataDir, "etcd.sock") }

// maxSocketPath is the longest path a unix socket may have on Linux
// (sun_path is 108 bytes, NUL included).
const maxSocketPath = 107

// Etcd is a running etcd connection, embedded or external.
type Etcd struct {
	Client *clientv3.Client
	server *embed.Etcd
	socket string
}

// Start starts an embedded member or connects to an external cluster, and
// returns once it can serve requests.
func Start(ctx context.Context, cfg Config) (*Etcd, error) {
	if len(cfg.Endpoints) > 0 {
		return connect(ctx, cfg)
	}
	for _, f := range clientTLSFlags(cfg) {
		if f.path != "" {
			return nil, fmt.Errorf("%s is for an external etcd (--etcd-endpoints); the embedded one is reached through %s", f.flag, SocketPath(cfg.DataDir))
		}
	}
	if cfg.CA == nil {
		return nil, fmt.Errorf("embedded etcd: no cluster CA given for peer TLS")
	}
	peerURL, err := checkPeerURL(or(cfg.PeerURL, DefaultPeerURL))
	if err != nil {
		return nil, err
	}
	if err := checkInitialCluster(cfg.InitialCluster); err != nil {
		return nil, err
	}
	if err := privateDir(cfg.DataDir); err != nil {
		return nil, err
	}
	socket, err := filepath.Abs(SocketPath(cfg.DataDir))
	if err != nil {
		return nil, err
	}
	if len(socket) > maxSocketPath {
		return nil, fmt.Errorf("--data-dir %s: etcd's socket %s would be %d bytes long, and unix sockets allow %d: use a shorter --data-dir", cfg.DataDir, socket, len(socket), maxSocketPath)
	}
	if err := resolvePortZero(peerURL); err != nil {
		return nil, err
	}
	var dns []string
	var ips []net.IP
	if ip := net.ParseIP(peerURL.Hostname()); ip != nil {
		ips = append(ips, ip)
	} else {
		dns = append(dns, peerURL.Hostname())
	}
	peer, err := pki.LoadOrCreatePeer(filepath.Join(cfg.DataDir, "pki"), cfg.CA, dns, ips)
	if err != nil {
		return nil, err
	}

	ec := embed.NewConfig()
	ec.Name = or(cfg.Name, "default")
	ec.Dir = filepath.Join(cfg.DataDir, "etcd")
	ec.LogLevel = "error"
	ec.Logger = "zap"
	logPath := filepath.Join(cfg.DataDir, "etcd.log")
	// etcd would create its log readable by all; it keeps the mode of one
	// that exists.
	if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		f.Chmod(0o600)
		f.Close()
	}
	ec.LogOutputs = []string{logPath}
	ec.ListenClientUrls = []url.URL{{Scheme: "unix", Path: socket}}
	// etcd wants an advertised client URL per listener, as host:port,
	// which a socket path is not. The member advertises none: nothing
	// off this machine can reach the socket anyway.
	ec.AdvertiseClientUrls = []url.URL{}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.PeerTLSInfo = transport.TLSInfo{
		CertFile:       peer.Cert,
		KeyFile:        peer.Key,
		TrustedCAFile:  peer.CA,
		ClientCertAuth: true,
		AllowedCNs:     []string{pki.PeerCommonName},
		// etcd would also require a connecting peer's source address
		// to be named in its certificate. That breaks members on
		// multi-homed machines (the kernel picks the source) and adds
		// nothing here: only servers hold peer certificates, and each
		// holds the CA key too. Both ends still verify the chain and
		// the common name, and the dialling end the listener's address.
		SkipClientSANVerify: true,
	}
	ec.InitialCluster = or(cfg.InitialCluster, ec.Name+"="+peerURL.String())
	ec.ClusterState = or(cfg.ClusterState, embed.ClusterStateFlagNew)
	ec.InitialClusterToken = "hearth"
	ec.SnapshotCatchUpEntries = catchUpEntries(ec.InitialCluster)
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = or(durationString(cfg.CompactionRetention), "1h")
	// A member restarting into an existing data directory ignores the
	// initial-cluster settings, as etcd always does.
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd in %s: %w", ec.Dir, err)
	}
	// The socket was made with the process's umask; the data directory
	// (0700, checked above) kept others out until now.
	if err := os.Chmod(socket, 0o600); err != nil {
		abort(e)
		return nil, fmt.Errorf("embedded etcd: restricting its socket: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		abort(e)
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		abort(e)
		return nil, ctx.Err()
	case <-time.After(5 * time.Minute):
		abort(e)
		return nil, fmt.Errorf("embedded etcd did not become ready in 5 minutes (are the other members of --etcd-initial-cluster up, and do they share this server's CA? see %s)", filepath.Join(cfg.DataDir, "etcd.log"))
	}
	// The API server calls its member directly, not through gRPC over a
	// socket: no marshalling, no round trip. Writes still go through raft
	// (forwarded to the leader in a cluster).
	return &Etcd{Client: v3client.New(e.Server), server: e, socket: socket}, nil
}

// abort stops a member that may not be ready. etcd's Close alone waits
// for the client listeners to finish serving, which they start only once
// the member is ready (it has found a quorum), so a member still waiting
// for its peers would never stop.
func abort(e *embed.Etcd) {
	e.Server.HardStop()
	e.Close()
}

// connect is a client of an external cluster.
func connect(ctx context.Context, cfg Config) (*Etcd, error) {
	tlsConfig, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, TLS: tlsConfig, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
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

// clientTLS is the TLS configuration for an external cluster, or nil when
// no TLS flag was given.
func clientTLS(cfg Config) (*tls.Config, error) {
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" {
		return nil, nil
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, fmt.Errorf("--etcd-certfile and --etcd-keyfile go together: give both, or neither")
	}
	for _, ep := range cfg.Endpoints {
		// etcd's client quietly drops TLS for http:// endpoints.
		if !strings.HasPrefix(ep, "https://") {
			return nil, fmt.Errorf("--etcd-endpoints %s: with --etcd-cafile, --etcd-certfile or --etcd-keyfile every endpoint must be https://", ep)
		}
	}
	for _, f := range clientTLSFlags(cfg) {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
	c, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("--etcd-cafile, --etcd-certfile, --etcd-keyfile: %w", err)
	}
	return c, nil
}

type flagPath struct{ flag, path string }

func clientTLSFlags(cfg Config) []flagPath {
	return []flagPath{{"--etcd-cafile", cfg.CAFile}, {"--etcd-certfile", cfg.CertFile}, {"--etcd-keyfile", cfg.KeyFile}}
}

// checkPeerURL parses this member's peer URL and refuses one that is not
// https or does not name the member's own address.
func checkPeerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--etcd-peer-url %s: %w", s, err)
	}
	if err := checkPeer(u); err != nil {
		return nil, fmt.Errorf("--etcd-peer-url %s: %w", s, err)
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		return nil, fmt.Errorf("--etcd-peer-url %s: give this member's own address, which the others dial and its certificate names, not %s", s, u.Hostname())
	}
	return u, nil
}

// checkInitialCluster refuses any member whose peer URL is not https.
func checkInitialCluster(s string) error {
	for _, entry := range strings.Split(s, ",") {
		if entry = strings.TrimSpace(entry); entry == "" {
			continue
		}
		name, raw, ok := strings.Cut(entry, "=")
		if !ok || name == "" {
			return fmt.Errorf("--etcd-initial-cluster: %q is not name=peerURL", entry)
		}
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("--etcd-initial-cluster: %s: %w", entry, err)
		}
		if err := checkPeer(u); err != nil {
			return fmt.Errorf("--etcd-initial-cluster: %s: %w", entry, err)
		}
	}
	return nil
}

func checkPeer(u *url.URL) error {
	if u.Scheme != "https" {
		v := *u
		v.Scheme = "https"
		return fmt.Errorf("members talk to each other over mutual TLS only, with certificates from the cluster CA; use %s", v.String())
	}
	if u.Hostname() == "" || u.Port() == "" {
		return fmt.Errorf("want https://HOST:PORT")
	}
	return nil
}

// privateDir makes dir (0700) or checks that others cannot enter it (see
// pki.PrivateDir): it holds etcd's socket, data and the cluster's keys.
func privateDir(dir string) error {
	if err := pki.PrivateDir(dir); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	return nil
}

// Embedded reports whether this process runs an etcd member.
func (e *Etcd) Embedded() bool { return e.server != nil }

// LoneVoter says whether the embedded member is its cluster's only
// voting member now (false for an external cluster). Such a member has
// applied every write it acknowledged, so reading its own copy
// (serializable) sees what a linearizable read would, without waiting
// for the raft loop.
func (e *Etcd) LoneVoter() bool {
	if e.server == nil {
		return false
	}
	voters := 0
	for _, m := range e.server.Server.Cluster().Members() {
		if !m.IsLearner {
			voters++
		}
	}
	return voters == 1
}

// Socket is the embedded member's client socket ("" for an external
// cluster).
func (e *Etcd) Socket() string { return e.socket }

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

// loneMemberCatchUpEntries is how many raft entries a member started
// alone keeps in memory after each of its snapshots (etcd keeps 5,000,
// for followers to catch up from without a snapshot sent them). A lone
// member has no follower; what it kept was every write's last 5,000
// entries decoded in memory (a VM's status, a batch of 48 bindings):
// live heap of tens of MiB at 1,000 hosts, which the collector's
// headroom doubles in RSS (issue 16's sixth pass). A member added later
// to such a cluster catches up from a snapshot, as any new member does,
// and so does one that falls further behind than this.
const loneMemberCatchUpEntries = 500

// catchUpEntries is SnapshotCatchUpEntries for a member started with
// this initial cluster: fewer when it is alone, etcd's default (0) when
// it has peers.
func catchUpEntries(initialCluster string) uint64 {
	if strings.Count(initialCluster, "=") == 1 {
		return loneMemberCatchUpEntries
	}
	return 0
}
