package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

//lint:file-ignore SA1019 x/net's HTTP/2 transport, deprecated in favour of net/http's, is the one that dials once for requests that come together (net/http opens a connection per waiting request); see client/transport.go

// transport carries a client's requests and watches over one HTTP/2
// connection, as streams: an agent's informers and requests would
// otherwise hold a connection each (five watches, and one per request in
// flight), and a thousand agents fill the server's connection limit, its
// memory with per-connection buffers and its CPU with TLS handshakes.
//
// It is golang.org/x/net/http2's transport, not net/http's: that one
// dials a connection for every request waiting when none is open (it
// cannot know the server speaks HTTP/2 before a handshake), so an agent
// starting its informers, or coming back after the server restarted,
// would still open and close a connection per request. x/net's dials one
// and has the others wait for it. A second connection is opened only
// when the first has as many streams as the server allows
// (serving.Limits.MaxStreams).
//
// A request HTTP/2 cannot carry (a console's websocket, which upgrades an
// HTTP/1.1 connection), a server that does not speak HTTP/2 (no such
// Hearth server, but a proxy in front of one may be), and plain http://
// go over HTTP/1.1.
type transport struct {
	h2 *http2.Transport
	h1 *http.Transport
	// noH2 is set once the server has answered a handshake without
	// HTTP/2: the client uses HTTP/1.1 from then on.
	noH2 atomic.Bool
}

// errNoH2 is a handshake in which the server did not choose HTTP/2.
var errNoH2 = errors.New("the server does not speak HTTP/2")

// headerTableSize is the HPACK table (Go's default 4 KiB) this client
// encodes its requests' headers with, which the server mirrors for the
// connection's life: a thousand agents' 4 KiB tables held over 9 MiB of
// the server's heap, mostly paths seen once. 1 KiB still keeps what every
// request repeats (the token, the content type); the rest costs its
// bytes on the wire. The server encodes with the same (serving.New).
const headerTableSize = 1 << 10

const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 10 * time.Second
)

func newTransport(tlsConf *tls.Config) *transport {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	t := &transport{
		h1: &http.Transport{
			TLSClientConfig:     tlsConf,
			Proxy:               nil, // the API is never reached through a proxy
			DialContext:         dialer.DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: handshakeTimeout,
		},
	}
	// Offering HTTP/1.1 as well lets a server that does not speak
	// HTTP/2 say so by choosing it, rather than end the handshake.
	h2conf := tlsConf.Clone()
	h2conf.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
	t.h2 = &http2.Transport{
		TLSClientConfig: h2conf,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
			defer cancel()
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, err
			}
			if st := tc.ConnectionState(); st.NegotiatedProtocol != http2.NextProtoTLS {
				tc.Close()
				return nil, fmt.Errorf("%w (it chose %q)", errNoH2, st.NegotiatedProtocol)
			}
			return tc, nil
		},
		// The connection carries every watch: it must not hang on a
		// dead peer for the kernel's keepalive (minutes). With nothing
		// received for ReadIdleTimeout it is pinged, and closed without
		// an answer in PingTimeout; the watches resume on a new one.
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
		// A server that stops reading the connection (every stream's
		// writes wait) is given up on, as HTTP/1.1's writes would be by
		// their request's timeout.
		WriteByteTimeout: time.Minute,
		// The server keeps, for the connection's life, a table of the
		// headers this client sent, as large as this client makes it.
		MaxEncoderHeaderTableSize: headerTableSize,
	}
	return t
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" || req.Header.Get("Upgrade") != "" || t.noH2.Load() {
		return t.h1.RoundTrip(req)
	}
	resp, err := t.h2.RoundTrip(req)
	if errors.Is(err, errNoH2) {
		// Nothing was sent: the handshake came first.
		t.noH2.Store(true)
		return t.h1.RoundTrip(req)
	}
	return resp, err
}

// CloseIdleConnections closes the connections that carry no request.
func (t *transport) CloseIdleConnections() {
	t.h2.CloseIdleConnections()
	t.h1.CloseIdleConnections()
}
