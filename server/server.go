// Package server is Hearth's control plane: the HTTP/JSON API over etcd,
// authentication and tenant isolation, and the controllers that keep the
// cluster's state true (they run on the elected leader of an HA control
// plane).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/reconcile"
	"hearth.dev/hearth/server/admission"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/server/controllers"
	"hearth.dev/hearth/server/etcd"
	"hearth.dev/hearth/server/openapi"
	"hearth.dev/hearth/server/store"
	"hearth.dev/hearth/serving"
	"hearth.dev/hearth/version"
)

// Version is the build's version (see package version).
var Version = version.Version

// Config is everything `hearth server` takes.
type Config struct {
	// DataDir holds the embedded etcd, the certificates and admin.conf.
	DataDir string
	// Listen is the API's address (default 127.0.0.1:8443).
	Listen string
	// AdvertiseURL is how clients and agents reach this server (default
	// from Listen).
	AdvertiseURL string
	// TLSSANs are extra names and addresses for the serving certificate.
	TLSSANs []string
	// CACertFile and CAKeyFile are the cluster CA to use (--ca-cert,
	// --ca-key): every member of an HA control plane is given the same one
	// for its first start, which keeps a copy in DATA-DIR/pki. Without
	// them a lone server makes its own.
	CACertFile, CAKeyFile string
	Etcd                  etcd.Config
	// AccessLog logs every request.
	AccessLog bool
	// MaxUploadSize caps one image upload, in bytes (default
	// DefaultMaxUploadSize).
	MaxUploadSize int64
	// UploadReserve is the free space an upload must leave on the data
	// directory's file system, which etcd needs (default
	// DefaultUploadReserve).
	UploadReserve int64
	// Limits are the API's timeouts and connection limit (zero fields
	// take serving's defaults). Watches, logs, consoles and image
	// content get deadlines that move with their progress instead.
	Limits serving.Limits
	// SecretsKeyFile holds the key Secrets are encrypted with in etcd
	// (default DATA-DIR/secrets.key, made by the first server). Every
	// server of a cluster needs the same file.
	SecretsKeyFile string
	// DisableControllers runs only the API (tests of the API alone).
	DisableControllers bool
	// DiscoveredMachineTTL is how long a Machine waiting in phase
	// Discovered, untouched by a person, may go unseen by the boot
	// service before the machines controller deletes it (default a day;
	// negative: never).
	DiscoveredMachineTTL time.Duration
	// Controllers run on the leader; each gets a client and a recorder.
	Controllers []ControllerFunc
	// Sensors is how machines' BMC sensors are read (sensors.go).
	Sensors SensorOptions
}

// ControllerFunc runs one controller until ctx ends.
type ControllerFunc func(ctx context.Context, c *client.Client, rec *client.Recorder) error

// Defaults of the upload bounds.
const (
	DefaultMaxUploadSize = 64 << 30
	DefaultUploadReserve = 2 << 30
)

// Admitter checks an object against others before it is written (quotas,
// references). p is the caller; old is nil on create.
type Admitter func(ctx context.Context, p *auth.Principal, obj, old api.Object) error

// Server is a running control plane member.
type Server struct {
	cfg        Config
	etcd       *clientv3.Client
	db         *etcd.Etcd
	store      *store.Store
	authn      *auth.Authenticator
	ca         *pki.CA
	migCA      migrationCA // live migration's CA, read on first use (migrationcert.go)
	openapi    http.Handler
	mux        *http.ServeMux // the route table (routes.go)
	metrics    *metrics
	admitters  []Admitter
	quota      *admission.Quota
	tenantKind *api.KindInfo
	userKind   *api.KindInfo
	// tenants mirrors Tenant objects so a create need not read etcd to
	// learn that its tenant exists.
	tenants *store.Mirror[struct{}]
	// createPhases time VM creates by phase (createphases.go).
	createPhases *createPhases

	// hostWrites queues hosts' writes beyond 64 per core (fairqueue.go).
	hostWrites *fairQueue

	// feeds share one etcd watch per kind among the API's watchers.
	feeds feeds
	// hostLeases are the hosts' etcd leases, for host liveness.
	hostLeases *hostLeases
	// informers are the controllers' caches, kept warm while this server
	// is not the leader, so that it leads at once when it becomes one.
	informers     *controllers.Informers
	bookmarkEvery time.Duration
	listener      net.Listener
	httpServer    *http.Server
	limits        serving.Limits
	internalToken string
	// runCtx ends when the server closes.
	runCtx context.Context
	// holders is the lease of this server's image holder records.
	holders holderLease
	sensors sensorCache
	wg      sync.WaitGroup
	stop    context.CancelFunc

	// scope is what each host's agent reads (hostscope.go).
	scope *hostScope
	// serving is the API's listener and its connection counts
	// (connections.go).
	serving *serving.Server
}

// Store returns the object store (for in-process tests and tools).
func (s *Server) Store() *store.Store { return s.store }

// Etcd returns the etcd client.
func (s *Server) Etcd() *clientv3.Client { return s.etcd }

// EtcdSocket returns the embedded etcd member's client socket, the one
// way to reach it from outside this process ("" with an external etcd).
func (s *Server) EtcdSocket() string { return s.db.Socket() }

// URL returns the server's advertised URL.
func (s *Server) URL() string { return s.cfg.AdvertiseURL }

// CA returns the cluster CA certificate PEM.
func (s *Server) CAPEM() []byte { return s.ca.CertPEM }

// AddAdmitter adds an admission check; call before Start.
func (s *Server) AddAdmitter(a Admitter) { s.admitters = append(s.admitters, a) }

// DefaultDataDir is /var/lib/hearth for root and the user's data
// directory otherwise.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/hearth"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "hearth")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "hearth")
}

// Start brings up etcd, the certificates, the API listener and, on the
// leader, the controllers. It returns once the API is serving.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8443"
	}
	if cfg.Etcd.DataDir == "" {
		cfg.Etcd.DataDir = cfg.DataDir
	}
	if cfg.MaxUploadSize == 0 {
		cfg.MaxUploadSize = DefaultMaxUploadSize
	}
	if cfg.UploadReserve == 0 {
		cfg.UploadReserve = DefaultUploadReserve
	}
	if cfg.MaxUploadSize < 0 || cfg.UploadReserve < 0 {
		return nil, fmt.Errorf("--max-upload-size and --upload-reserve cannot be negative")
	}
	// The data directory holds keys, tokens and etcd's socket.
	if err := pki.PrivateDir(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	tk, _ := api.KindByName("Tenant")
	uk, _ := api.KindByName("User")
	s := &Server{cfg: cfg, tenantKind: tk, userKind: uk, bookmarkEvery: 5 * time.Second, metrics: newMetrics(),
		hostWrites: newFairQueue(hostWriteLimit())}
	s.feeds.s = s
	// An embedded member needs the CA before etcd runs (peer TLS); with
	// an external etcd the CA comes from etcd alone.
	var wantCA *pki.CA
	migrate := false
	var err error
	if len(cfg.Etcd.Endpoints) == 0 {
		if wantCA, migrate, err = cfg.memberCA(); err != nil {
			return nil, err
		}
		cfg.Etcd.CA = wantCA
		if migrate {
			wantCA = nil
		}
	} else if wantCA, err = cfg.givenCA(); err != nil {
		return nil, err
	}
	db, err := etcd.Start(ctx, cfg.Etcd)
	if err != nil {
		return nil, err
	}
	s.db, s.etcd = db, db.Client
	if db.Embedded() {
		s.metrics.withEmbeddedEtcd()
	}
	s.metrics.reg.MustRegister(&s.sensors)
	s.store = store.New(s.etcd)
	if db.Embedded() {
		// The server calls its own member alone (store/reads.go).
		s.store.ReadsFromOneMember(db.LoneVoter)
	}
	s.createPhases = newCreatePhases(s.metrics.reg)
	installHooks(s.store)
	s.store.SetHooks("Tenant", admission.TenantHooks{})
	// A User's or Host's tokens go with it.
	s.store.SetHooks("User", tokenOwnerHooks{s})
	s.store.SetHooks("Host", tokenOwnerHooks{s})
	s.quota = admission.NewQuota(s.store)
	s.AddAdmitter(s.quota.Admit)
	s.AddAdmitter(admission.NewSubnets(s.store).Admit)
	s.AddAdmitter(admission.NewFloatingIPs(s.store).Admit)
	s.AddAdmitter(admission.NewPools(s.store).Admit)
	s.AddAdmitter(admission.NewMigrations(s.store).Admit)
	s.AddAdmitter(admission.NewHighAvailability(s.store).Admit)
	ok := false
	defer func() {
		if !ok {
			s.db.Close()
		}
	}()
	if cfg.SecretsKeyFile == "" {
		cfg.SecretsKeyFile = filepath.Join(cfg.DataDir, "secrets.key")
	}
	sk, err := loadSecretsKey(ctx, s.etcd, cfg.SecretsKeyFile)
	if err != nil {
		return nil, err
	}
	for _, k := range api.Kinds() {
		if k.Confidential {
			s.store.SetSealer(k.Kind, sk)
		}
	}
	if s.ca, err = s.loadOrCreateCA(ctx, wantCA); err != nil {
		return nil, err
	}
	if migrate {
		// From the next start on, the member's peer certificate comes
		// from the cluster CA.
		if err := pki.WriteCAFiles(filepath.Join(cfg.DataDir, "pki"), s.ca); err != nil {
			return nil, err
		}
		slog.Info("kept the cluster CA in the data directory for peer TLS", "dir", filepath.Join(cfg.DataDir, "pki"))
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "ca.crt"), s.ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	dns, ips, err := pki.SANs(cfg.Listen, cfg.TLSSANs)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	cert, err := pki.LoadOrCreateServing(filepath.Join(cfg.DataDir, "pki"), s.ca, "hearth-server", dns, ips)
	if err != nil {
		return nil, err
	}
	hk, _ := api.KindByName("Host")
	s.authn = auth.NewAuthenticator(s.etcd, store.KindPrefix(uk), store.KindPrefix(hk))
	runCtx, cancel := context.WithCancel(context.Background())
	s.runCtx = runCtx
	s.holders.lost = make(chan struct{}, 1)
	s.authn.Run(runCtx)
	s.scope = newHostScope(s.store, s.etcd)
	s.authn.SetHostScope(s.scope)
	go s.scope.run(runCtx)
	s.tenants = store.NewMirror(s.etcd, store.KindPrefix(tk), func([]byte) (struct{}, error) { return struct{}{}, nil })
	go s.tenants.Run(runCtx)
	s.hostLeases = newHostLeases(s.etcd)
	go s.hostLeases.run(runCtx)
	s.internalToken = auth.NewSecret("internal")
	s.authn.AddInternal(s.internalToken, &auth.Principal{Name: "system:controllers", Role: api.RoleClusterAdmin, Internal: true})
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := s.authn.WaitReady(wctx); err != nil {
		cancel()
		return nil, fmt.Errorf("loading tokens from etcd: %w", err)
	}
	s.openapi = openapi.Handler(Version)
	s.mux = s.newMux()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("--listen: %w", err)
	}
	s.listener = ln
	if s.cfg.AdvertiseURL == "" {
		s.cfg.AdvertiseURL = advertiseURL(ln.Addr().String())
	}
	s.AddAdmitter(admission.NewURLs(s.ownNames(dns, ips)).Admit)
	hs := serving.New("the API server", ln, s, cfg.Limits, func(w http.ResponseWriter, msg string) {
		writeError(w, api.NewUnavailable("%s", msg))
	})
	s.limits = hs.Limits
	s.serving = hs
	s.metrics.withConnections(hs)
	s.httpServer = hs.Server
	s.httpServer.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.httpServer.ErrorLog = slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.httpServer.ServeTLS(hs.Listener, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("API server stopped", "err", err)
		}
	}()
	if err := s.bootstrap(ctx); err != nil {
		cancel()
		s.httpServer.Close()
		return nil, err
	}
	if err := s.bindLegacyTokens(ctx); err != nil {
		cancel()
		s.httpServer.Close()
		return nil, fmt.Errorf("binding tokens to their owners' uids: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.collectImageContent(runCtx)
	}()
	if !cfg.DisableControllers {
		ic, err := s.InternalClient()
		if err != nil {
			cancel()
			s.httpServer.Close()
			return nil, err
		}
		s.informers = controllers.NewInformers(runCtx, ic)
		s.informers.Warm()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.lead(runCtx)
		}()
	}
	go func() {
		<-ctx.Done()
		cancel()
	}()
	s.stop = cancel
	ok = true
	slog.Info("hearth server ready", "url", s.cfg.AdvertiseURL, "dataDir", cfg.DataDir, "embeddedEtcd", s.db.Embedded())
	return s, nil
}

// ownNames are the names and addresses this server (and its etcd) is
// reached at, which no image URL may point at: its listen and advertised
// addresses, its certificate's names (all of the machine's addresses when
// it listens on all of them), and its etcd's URLs.
func (s *Server) ownNames(dns []string, ips []net.IP) []string {
	own := append([]string{s.cfg.AdvertiseURL, "https://" + s.cfg.Listen, s.cfg.Etcd.PeerURL}, dns...)
	own = append(own, s.cfg.TLSSANs...)
	own = append(own, s.cfg.Etcd.Endpoints...)
	for _, ip := range ips {
		own = append(own, ip.String())
	}
	for _, m := range strings.Split(s.cfg.Etcd.InitialCluster, ",") {
		if _, peer, ok := strings.Cut(m, "="); ok {
			own = append(own, peer)
		}
	}
	return own
}

// advertiseURL turns a bound address into a URL clients can use: an
// unspecified address becomes loopback.
func advertiseURL(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, port)
}

// Close stops the server: controllers, API, then etcd.
func (s *Server) Close() error {
	// This server's image holder records go first, at once, rather than
	// when their lease runs out; none are made from now on.
	s.holders.mu.Lock()
	s.holders.closed = true
	if id := s.holders.id; id != 0 {
		rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, _ = s.etcd.Revoke(rctx, id)
		rcancel()
	}
	s.holders.mu.Unlock()
	s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.httpServer.Shutdown(ctx)
	s.httpServer.Close()
	s.wg.Wait()
	s.db.Close()
	return nil
}

func (s *Server) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.etcd.Get(ctx, "/hearth/ready-probe")
	return err
}

// bootstrap makes a new cluster usable: a default tenant, an admin user,
// and an admin.conf with a token for it, written once per data directory.
func (s *Server) bootstrap(ctx context.Context) error {
	for _, obj := range []api.Object{
		&api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: "default"}, Spec: api.TenantSpec{DisplayName: "Default tenant"}},
		&api.User{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "User"}, Metadata: api.ObjectMeta{Name: "admin"}, Spec: api.UserSpec{Role: api.RoleClusterAdmin, FullName: "Cluster administrator"}},
	} {
		if es := api.Prepare(obj, nil); len(es) > 0 {
			return es
		}
		if _, err := s.store.Create(ctx, obj); err != nil && !api.IsAlreadyExists(err) {
			return fmt.Errorf("bootstrap %s: %w", api.Ref(obj), err)
		}
	}
	path := filepath.Join(s.cfg.DataDir, "admin.conf")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	owner, err := s.readOwner(ctx, s.userKind, "admin")
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	secret, _, err := s.saveToken(ctx, api.TokenRecord{Kind: api.UserToken, User: "admin", Description: "admin.conf in " + s.cfg.DataDir}, &owner)
	if err != nil {
		return err
	}
	cfg := &client.Config{CurrentContext: "admin@hearth", Contexts: []client.Context{{
		Name: "admin@hearth", Server: s.cfg.AdvertiseURL, CertificateAuthority: string(s.ca.CertPEM), Token: secret, Tenant: "default",
	}}}
	return cfg.Save(path)
}

// InternalClient returns a cluster-admin client for this server's own use
// (controllers), over its own API.
func (s *Server) InternalClient() (*client.Client, error) {
	return client.New(&client.Context{Name: "internal", Server: s.cfg.AdvertiseURL, CertificateAuthority: string(s.ca.CertPEM), Token: s.internalToken})
}

// lead campaigns for leadership and runs the controllers while leading,
// so an HA control plane runs each controller exactly once.
func (s *Server) lead(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.leadOnce(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("leader election", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (s *Server) leadOnce(ctx context.Context) error {
	sess, err := concurrency.NewSession(s.etcd, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, "/hearth/leader")
	if err := el.Campaign(ctx, s.cfg.AdvertiseURL); err != nil {
		return err
	}
	slog.Info("leading: starting controllers")
	lctx, cancel := context.WithCancel(reconcile.WithMetrics(ctx, s.metrics.controllers))
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			slog.Warn("lost leadership: stopping controllers")
			cancel()
		case <-lctx.Done():
		}
	}()
	c, err := s.InternalClient()
	if err != nil {
		return err
	}
	rec := client.NewRecorder(c, "hearth-server").Background(lctx)
	var wg sync.WaitGroup
	for _, run := range append(append(defaultControllers(s.cfg, s.informers, s.hostLeases, s.metrics.bindings), s.pollSensors), s.cfg.Controllers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(lctx, c, rec); err != nil && lctx.Err() == nil {
				slog.Error("controller stopped", "err", err)
				cancel()
			}
		}()
	}
	wg.Wait()
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	_ = el.Resign(rctx)
	return nil
}

// ParseList splits a comma-separated flag value.
func ParseList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
