// Package serving holds what every Hearth HTTP server shares so that a
// slow or hostile client cannot hold it up: timeouts for headers, bodies,
// answers and idle connections, a limit on open connections (at it, a new
// connection takes the place of the one idle longest; with none idle, a
// client gets a clear 503 and the connection is closed), a limit on the
// requests one HTTP/2 connection carries at once, and deadlines
// for the routes that legitimately live long (watches, followed logs,
// uploads, downloads, consoles) which move with the request's progress
// instead of a fixed cap. (A connection taken over by a websocket loses
// its deadlines in net/http's Hijack; the websocket's owner bounds its
// writes and pings its peer.) The API server, the boot service and the
// agent's console endpoint all use it.
//
// Over TLS a client may speak HTTP/2, as Hearth's own client and browsers
// do: then one connection carries all its requests and watches, each a
// stream. The limits hold per stream where HTTP/1.1 had them per
// connection (a stream's deadlines; a stream that stops being read is
// reset, not its connection), and per connection where they must: a
// connection with no stream open is idle (and may be evicted), one whose
// peer stops reading it altogether is closed after WriteTimeout, and one
// over the limit answers 503 and goes away (a GOAWAY) once answered.
package serving

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are a server's timeouts and connection limit. Zero fields take
// the defaults below.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included, and is
	// how long a long-lived upload may go without a byte arriving.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer, and is how long one write of
	// a long-lived answer (a watch event, a download's next piece) may
	// take before the client is taken for gone.
	WriteTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request.
	IdleTimeout time.Duration
	// MaxConnections is how many connections may be open at once
	// (negative: no limit). A connection beyond it closes the one idle
	// longest (kept alive between requests) and takes its place; with
	// none idle, it gets a 503 to its first request and is closed.
	MaxConnections int
	// MaxStreams is how many requests one HTTP/2 connection may have in
	// flight at once, its watches included. A client that wants more
	// opens another connection (Go's client does so by itself), which
	// counts against MaxConnections: together they bound the requests
	// a server serves at once.
	MaxStreams int
}

// Defaults for Limits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = time.Minute
	DefaultWriteTimeout      = time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxConnections    = 4096
	DefaultMaxStreams        = 250
)

// headerTableSize is the HPACK dynamic table (RFC 7541; Go's default is
// 4 KiB) a server encodes its responses' headers with: see New. Hearth's
// client encodes its requests' with the same (client/transport.go).
const headerTableSize = 1 << 10

// WithDefaults fills in the zero fields.
func (l Limits) WithDefaults() Limits {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&l.ReadTimeout, DefaultReadTimeout)
	set(&l.WriteTimeout, DefaultWriteTimeout)
	set(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.MaxStreams <= 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	return l
}

// Server is an http.Server with the limits applied, and the listener to
// serve it on.
type Server struct {
	*http.Server
	Limits Limits
	// Listener counts connections against MaxConnections; serve on it
	// (Serve, or ServeTLS when TLSConfig is set).
	Listener net.Listener
	name     string
	open     atomic.Int64
	accepted atomic.Int64
	// lastReject rate-limits the log line about refused connections.
	lastReject atomic.Int64

	// idle are the connections kept alive between requests (over
	// HTTP/2: with no stream open, so never one holding a watch), by
	// when they became idle: at the limit, a new connection closes the
	// oldest rather than being refused. Clients that keep many idle
	// connections (a thousand agents, each after a burst of requests)
	// would otherwise fill the limit with connections nobody uses.
	idleMu sync.Mutex
	idle   map[*conn]time.Time
}

// New wraps ln and h with the limits. name says which server it is in
// logs and in the 503's message ("the API server", "the boot service").
// reject, when not nil, writes the 503 in the server's own format (the
// API's Status); it gets the message to show.
func New(name string, ln net.Listener, h http.Handler, l Limits, reject func(w http.ResponseWriter, msg string)) *Server {
	l = l.WithDefaults()
	s := &Server{Limits: l, name: name}
	if reject == nil {
		reject = func(w http.ResponseWriter, msg string) { http.Error(w, msg, http.StatusServiceUnavailable) }
	}
	s.Listener = &listener{Listener: ln, s: s}
	s.Server = &http.Server{
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: l.MaxStreams,
			// A peer that stops reading its connection stalls every
			// stream on it; the per-stream deadlines reset streams
			// but cannot free the connection's writer.
			WriteByteTimeout: l.WriteTimeout,
			// Room for several uploads at once: a handler slow to
			// read one request's body must not hold back the bodies
			// of the connection's other requests, which share this
			// window (each stream has 1 MiB of it).
			MaxReceiveBufferPerConnection: 4 << 20,
			// HPACK's tables of recent headers, one each way per
			// connection, are held for the connection's life (and
			// indexed by two maps): at the default 4 KiB each, a
			// thousand agents' connections hold over 11 MiB of
			// request paths seen once. A quarter of that still
			// keeps what every response repeats, and a header not
			// in it costs its bytes on the wire, not a round trip.
			// Only the table of what the server sends is its own to
			// cut: a smaller table for what it reads would be
			// announced in its SETTINGS, which a client may not
			// have read before its first requests fill a 4 KiB
			// one (Go's server then ends the connection with
			// COMPRESSION_ERROR). Hearth's client keeps its own
			// table at 1 KiB (client/transport.go).
			MaxEncoderHeaderTableSize: headerTableSize,
		},
		ConnState: s.connState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				c = tc.NetConn()
			}
			if lc, ok := c.(*conn); ok && lc.over {
				return context.WithValue(ctx, overKey{}, true)
			}
			return ctx
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if over, _ := r.Context().Value(overKey{}).(bool); over {
				s.logReject()
				w.Header().Set("Connection", "close")
				w.Header().Set("Retry-After", "1")
				reject(w, fmt.Sprintf("%s has %d connections open, its limit; try again shortly", s.name, s.Limits.MaxConnections))
				return
			}
			h.ServeHTTP(w, r)
		}),
	}
	return s
}

// connState keeps the idle set: a connection is in it from the end of one
// request to the start of the next, or, over HTTP/2, while it has no
// stream open (net/http reports an HTTP/2 connection idle and active as
// its streams go to none and back).
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*conn)
	if !ok {
		return
	}
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if st == http.StateIdle {
		if s.idle == nil {
			s.idle = map[*conn]time.Time{}
		}
		s.idle[lc] = time.Now()
		return
	}
	delete(s.idle, lc)
}

// evictIdle closes the connection idle longest, if any, and says whether
// it did. Its client sees a kept-alive connection closed, as after the
// idle timeout, and opens another when it next needs one.
func (s *Server) evictIdle() bool {
	s.idleMu.Lock()
	var oldest *conn
	var since time.Time
	for c, t := range s.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(s.idle, oldest)
	s.idleMu.Unlock()
	if oldest == nil {
		return false
	}
	oldest.Close()
	return true
}

// Open is the number of connections open now.
func (s *Server) Open() int64 { return s.open.Load() }

// Accepted is the number of connections accepted since the server
// started (each a TCP connection, and a TLS handshake when over TLS).
func (s *Server) Accepted() int64 { return s.accepted.Load() }

func (s *Server) logReject() {
	now := time.Now().UnixNano()
	last := s.lastReject.Load()
	if now-last < int64(time.Minute) || !s.lastReject.CompareAndSwap(last, now) {
		return
	}
	slog.Warn("refusing connections over the limit", "server", s.name, "maxConnections", s.Limits.MaxConnections)
}

type overKey struct{}

// listener counts open connections. Connections over the limit are still
// accepted, so that they can be told why (a 503) rather than wait in the
// kernel's queue; they are marked and closed after that one answer.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.accepted.Add(1)
	n := l.s.open.Add(1)
	over := l.s.Limits.MaxConnections > 0 && n > int64(l.s.Limits.MaxConnections)
	if over && l.s.evictIdle() {
		over = false
	}
	return &conn{Conn: c, s: l.s, over: over}, nil
}

type conn struct {
	net.Conn
	s    *Server
	over bool
	once sync.Once
}

func (c *conn) Close() error {
	c.once.Do(func() { c.s.open.Add(-1) })
	return c.Conn.Close()
}

// Deadlines moves one request's connection deadlines as the request makes
// progress, for routes that may rightly last longer than the server's
// fixed timeouts. Stall is how long it may go without progress.
type Deadlines struct {
	rc    *http.ResponseController
	stall time.Duration
}

// For returns the deadlines of the request w answers.
func For(w http.ResponseWriter, stall time.Duration) *Deadlines {
	return &Deadlines{rc: http.NewResponseController(w), stall: stall}
}

// Body wraps an upload's body: the answer's write deadline is lifted while
// it is read, each read must bring a byte within stall, and once the body
// is done the answer has stall to be written.
func (d *Deadlines) Body(body io.Reader) io.Reader {
	_ = d.rc.SetWriteDeadline(time.Time{})
	return &progressReader{r: body, d: d}
}

type progressReader struct {
	r    io.Reader
	d    *Deadlines
	done bool
}

func (p *progressReader) Read(b []byte) (int, error) {
	_ = p.d.rc.SetReadDeadline(time.Now().Add(p.d.stall))
	n, err := p.r.Read(b)
	if err != nil && !p.done {
		p.done = true
		_ = p.d.rc.SetWriteDeadline(time.Now().Add(p.d.stall))
	}
	return n, err
}

// Stream prepares a long answer (a watch, a followed log, a download):
// the request's read deadline is lifted (its body is read, and the
// deadline would end the request while it streams), and the returned
// writer gives each write and flush stall to finish, with no deadline in
// between, so a quiet stream lives on while a client that stops reading
// is let go.
func (d *Deadlines) Stream(w http.ResponseWriter) http.ResponseWriter {
	_ = d.rc.SetReadDeadline(time.Time{})
	_ = d.rc.SetWriteDeadline(time.Time{})
	return &streamWriter{ResponseWriter: w, d: d}
}

type streamWriter struct {
	http.ResponseWriter
	d *Deadlines
	// armed, while a burst holds the deadline (Hold), is when it was
	// last set.
	armed time.Time
}

// Burst is a stream's writer that can keep its deadline across several
// writes and flushes (StreamWriter returns it).
type Burst interface {
	// Hold sets the write deadline for the writes and flushes that
	// follow, until Release lifts it: a burst of writes then costs two
	// deadline changes rather than two per write and two per flush
	// (over HTTP/2 each change is a message to the connection's one
	// serving goroutine, which every stream of it waits on). Each write
	// and flush still has at least three quarters of stall: the
	// deadline is moved on when a quarter has passed.
	Hold()
	// Release lifts the deadline Hold set, for a stream about to go
	// quiet.
	Release()
}

// Hold: see Burst.
func (s *streamWriter) Hold() {
	if s.armed.IsZero() {
		s.arm(time.Now())
	}
}

// Release: see Burst.
func (s *streamWriter) Release() {
	if !s.armed.IsZero() {
		s.armed = time.Time{}
		_ = s.d.rc.SetWriteDeadline(time.Time{})
	}
}

func (s *streamWriter) arm(now time.Time) {
	s.armed = now
	_ = s.d.rc.SetWriteDeadline(now.Add(s.d.stall))
}

// begin gives a write or flush its deadline: the held one, moved on if a
// quarter of stall has passed since it was set, or one of its own, which
// it lifts when done (the returned func).
func (s *streamWriter) begin() (end func()) {
	now := time.Now()
	if !s.armed.IsZero() {
		if now.Sub(s.armed) > s.d.stall/4 {
			s.arm(now)
		}
		return func() {}
	}
	_ = s.d.rc.SetWriteDeadline(now.Add(s.d.stall))
	return func() { _ = s.d.rc.SetWriteDeadline(time.Time{}) }
}

func (s *streamWriter) Write(b []byte) (int, error) {
	defer s.begin()()
	return s.ResponseWriter.Write(b)
}

// Flush sends what is buffered, within stall.
func (s *streamWriter) Flush() {
	_ = s.FlushError()
}

// FlushError is Flush with its error (http.ResponseController uses it).
func (s *streamWriter) FlushError() error {
	defer s.begin()()
	return s.d.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (s *streamWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
