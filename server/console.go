package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/coder/websocket"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/pki"
	"hearth.dev/hearth/server/auth"
	"hearth.dev/hearth/serving"
)

// VM consoles and console logs are subresources of VirtualMachines:
//
//	GET /apis/hearth.dev/v1alpha1/tenants/T/virtualmachines/NAME/log[?follow=1][&tail=BYTES|&tailLines=N]
//	GET /apis/hearth.dev/v1alpha1/tenants/T/virtualmachines/NAME/console (websocket)
//
// Reading the log needs the right to get the VM; the console, which types
// into the guest, the right to change it. The server authorizes the caller
// exactly as for the VM itself, then proxies to the agent of the VM's host
// over TLS in both directions: it presents a client certificate from the
// cluster CA (common name pki.ServerCommonName) and accepts only the
// agent certificate whose fingerprint the Host's status publishes.

const (
	subresourceLog     = "log"
	subresourceConsole = "console"
	// agentClientValidity bounds the certificate made for one request to
	// an agent: it is checked only during the handshake, so a short life
	// costs nothing and leaves nothing worth stealing.
	agentClientValidity = time.Hour
	// maxConsoleMessage bounds one websocket message passed through.
	maxConsoleMessage = 1 << 20
	// consoleWriteTimeout bounds passing one message on.
	consoleWriteTimeout = 30 * time.Second
	// consolePingEvery is how often both ends of a console are pinged;
	// one that does not answer within consoleWriteTimeout is taken for
	// gone, so a vanished peer does not hold the console open.
	consolePingEvery = 30 * time.Second
)

// serveVMConsole handles the log and console subresources of a VM.
func (s *Server) serveVMConsole(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	k, _ := api.KindByPlural("virtualmachines")
	t := target{kind: k, tenant: r.PathValue("tenant"), name: r.PathValue("name")}
	switch {
	case r.Method != http.MethodGet:
		return &api.Status{Kind: "Status", Code: http.StatusMethodNotAllowed, Reason: api.ReasonBadRequest, Message: r.Method + " is not allowed on " + r.URL.Path}
	case path.Base(r.URL.Path) == subresourceLog:
		return s.vmLog(w, r, p, t)
	}
	return s.vmConsole(w, r, p, t)
}

// agentEndpoint is where a VM's console is served.
type agentEndpoint struct {
	vm   string // "VirtualMachine NAME in tenant T", for messages
	host string
	url  string // the agent's base URL
	pin  string // hex SHA-256 of the agent's certificate
	uid  string // the VM's uid, which the agent knows it by
}

func (e agentEndpoint) path(sub string) string {
	return e.url + "/v1/vms/" + url.PathEscape(e.uid) + "/" + sub
}

// vmAgent authorizes p to do verb on the VM and finds its host's agent.
// Authorization comes first, so a caller who may not read the tenant's VMs
// gets the same Forbidden whether the VM exists or not.
func (s *Server) vmAgent(ctx context.Context, p *auth.Principal, t target, verb auth.Verb) (agentEndpoint, error) {
	deny := func(err error) error {
		var st *api.Status
		if verb == auth.Update && errors.As(err, &st) && st.Reason == api.ReasonForbidden {
			return api.NewForbidden("opening a VM's console needs the right to change the VM: %s", st.Message)
		}
		return err
	}
	if err := auth.Authorize(p, t.request(verb)); err != nil {
		return agentEndpoint{}, deny(err)
	}
	obj, err := s.store.Get(ctx, t.kind, t.tenant, t.name)
	if err != nil {
		return agentEndpoint{}, err
	}
	if !auth.VisibleTo(p, obj) {
		return agentEndpoint{}, api.NewNotFound(t.kind.Kind, t.tenant, t.name)
	}
	req := t.request(verb)
	req.Stored = obj
	if err := auth.Authorize(p, req); err != nil {
		return agentEndpoint{}, deny(err)
	}
	vm := obj.(*api.VirtualMachine)
	ep := agentEndpoint{vm: fmt.Sprintf("VirtualMachine %s in tenant %s", t.name, t.tenant), host: vm.Status.Host, uid: vm.Metadata.UID}
	if ep.host == "" {
		ep.host = vm.Spec.Host
	}
	if ep.host == "" {
		return ep, api.NewUnavailable("%s is not placed on a host yet: its console exists once it runs", ep.vm)
	}
	hk, _ := api.KindByName("Host")
	hobj, err := s.store.Get(ctx, hk, "", ep.host)
	if api.IsNotFound(err) {
		return ep, api.NewUnavailable("host %s of %s does not exist", ep.host, ep.vm)
	}
	if err != nil {
		return ep, err
	}
	h := hobj.(*api.Host)
	ep.url = strings.TrimRight(h.Status.AgentURL, "/")
	ep.pin = strings.ToLower(strings.ReplaceAll(h.Status.AgentCertSHA256, ":", ""))
	if ep.url == "" || ep.pin == "" {
		return ep, api.NewUnavailable("host %s has no agent endpoint yet (its agent publishes status.agentURL and status.agentCertSHA256 when it starts)", ep.host)
	}
	if u, err := url.Parse(ep.url); err != nil || u.Scheme != "https" || u.Host == "" {
		return ep, api.NewUnavailable("host %s publishes agentURL %q, which is not an https:// URL", ep.host, h.Status.AgentURL)
	}
	return ep, nil
}

// agentClient returns an HTTP client for one request to an agent: it
// presents a fresh client certificate from the cluster CA and trusts only
// the pinned agent certificate (agents' certificates are self-signed, and
// the pin published through the API is what vouches for them).
func (s *Server) agentClient(ep agentEndpoint) (*http.Client, error) {
	certPEM, keyPEM, err := s.ca.IssueClient(pki.ServerCommonName, agentClientValidity)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Names and CAs do not apply to a self-signed certificate; the
		// pin is checked below instead, on every handshake.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the agent presented no certificate")
			}
			if got := pki.Fingerprint(cs.PeerCertificates[0].Raw); got != ep.pin {
				return fmt.Errorf("the agent's certificate (sha256 %s) is not the one host %s publishes (%s)", got, ep.host, ep.pin)
			}
			return nil
		},
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:       conf,
		Proxy:                 nil, // agents are reached directly
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableKeepAlives:     true,
	}}, nil
}

// agentError turns an agent's error answer into the caller's.
func agentError(ep agentEndpoint, code int, body io.Reader) error {
	data, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	var st api.Status
	if json.Unmarshal(data, &st) != nil || st.Message == "" {
		return api.NewUnavailable("the agent of host %s answered %d %s: %s", ep.host, code, http.StatusText(code), strings.TrimSpace(string(data)))
	}
	if code == http.StatusNotFound {
		// The VM exists (we just read it); the agent has not set it up.
		return api.NewUnavailable("%s has not started on host %s yet: %s", ep.vm, ep.host, st.Message)
	}
	st.Kind, st.Code = "Status", code
	st.Message = "host " + ep.host + ": " + st.Message
	return &st
}

func unreachable(ep agentEndpoint, err error) error {
	return api.NewUnavailable("cannot reach the agent of host %s at %s: %v", ep.host, ep.url, err)
}

// vmLog streams a VM's console log from its agent.
func (s *Server) vmLog(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	o, err := api.ParseLogOptions(r.URL.Query())
	if err != nil {
		return err
	}
	ep, err := s.vmAgent(r.Context(), p, t, auth.Get)
	if err != nil {
		return err
	}
	hc, err := s.agentClient(ep)
	if err != nil {
		return err
	}
	aq := o.Query()
	u := ep.path(subresourceLog)
	if len(aq) > 0 {
		u += "?" + aq.Encode()
	}
	// A followed log ends when the caller's credential no longer holds.
	ctx, stop := s.whileCredentialHolds(r.Context(), r, p)
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return unreachable(ep, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return agentError(ep, resp.StatusCode, resp.Body)
	}
	// A followed log lasts as long as its reader wants (see watch).
	w = serving.For(w, s.limits.WriteTimeout).Stream(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // a followed log may be quiet for a long time
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil // the caller went away
			}
			_ = rc.Flush()
		}
		if err != nil {
			// The headers are sent: an agent that fails now can only end
			// the stream early.
			return nil
		}
	}
}

// vmConsole bridges the caller's websocket to the agent's. The agent is
// dialled first, so that a refusal (no agent, VM not running) reaches the
// caller as an ordinary API error rather than a closed websocket.
func (s *Server) vmConsole(w http.ResponseWriter, r *http.Request, p *auth.Principal, t target) error {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return api.NewBadRequest("the console is a websocket: connect with Upgrade: websocket (as `hearth console vm/%s` does)", t.name)
	}
	ep, err := s.vmAgent(r.Context(), p, t, auth.Update)
	if err != nil {
		return err
	}
	hc, err := s.agentClient(ep)
	if err != nil {
		return err
	}
	agent, resp, err := websocket.Dial(r.Context(), ep.path(subresourceConsole), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 && resp.Body != nil {
			return agentError(ep, resp.StatusCode, resp.Body)
		}
		return unreachable(ep, err)
	}
	// The websocket outlives the request's deadlines (net/http clears
	// them when Accept takes the connection over): the bridge bounds each
	// message's write, and pings find a peer that is gone.
	user, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{ConsoleProtocol}})
	if err != nil {
		agent.CloseNow()
		return nil // Accept has answered
	}
	// The console ends when the caller's credential no longer holds (a
	// revoked token, a deleted User or Host, a changed role).
	ctx, stop := s.whileCredentialHolds(context.WithoutCancel(r.Context()), r, p)
	defer stop()
	bridge(ctx, user, agent)
	return nil
}

// stillHolds authenticates r's credential again (the header, or a
// browser console's subprotocol: ui.go) and reports whether it still
// names the principal p that began a long request. An error is a
// credential that no longer authenticates at all.
func (s *Server) stillHolds(ctx context.Context, r *http.Request, p *auth.Principal) (bool, error) {
	q, err := s.authn.Authenticate(ctx, authorization(r))
	if err != nil {
		return false, err
	}
	return q.Role == p.Role && q.Tenant == p.Tenant && q.Host == p.Host && q.Boot == p.Boot && q.Name == p.Name, nil
}

// whileCredentialHolds returns a context that is cancelled when r's
// credential stops naming p (see heldCredential): streams that outlive
// their request's check (followed logs, consoles) end with the token that
// opened them.
func (s *Server) whileCredentialHolds(parent context.Context, r *http.Request, p *auth.Principal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		h, same, err := s.holdCredential(ctx, r, p)
		defer h.stop()
		for {
			if ctx.Err() == nil && (err != nil || !same) {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-h.changed():
				same, err = h.recheck(ctx)
			}
		}
	}()
	return ctx, cancel
}

// bridge copies messages both ways until one side closes or fails, then
// closes the other with the same code and reason, so that a viewer learns
// why the agent ended the console.
func bridge(ctx context.Context, a, b *websocket.Conn) {
	a.SetReadLimit(maxConsoleMessage)
	b.SetReadLimit(maxConsoleMessage)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- pipe(ctx, a, b) }()
	go func() { errc <- pipe(ctx, b, a) }()
	go func() { errc <- keepAlive(ctx, a, b) }()
	err := <-errc
	code, reason := websocket.StatusGoingAway, "the other end of the console went away"
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case websocket.StatusNoStatusRcvd, websocket.StatusAbnormalClosure, websocket.StatusTLSHandshake:
			// Reserved: they describe a close and may not be sent.
		default:
			code, reason = ce.Code, ce.Reason
		}
	}
	a.Close(code, reason)
	b.Close(code, reason)
	cancel()
	<-errc
	<-errc
}

// keepAlive pings both websockets now and then, and returns when one does
// not answer (or ctx ends).
func keepAlive(ctx context.Context, conns ...*websocket.Conn) error {
	t := time.NewTicker(consolePingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		for _, c := range conns {
			pctx, cancel := context.WithTimeout(ctx, consoleWriteTimeout)
			err := c.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
		}
	}
}

// pipe copies messages from one websocket to the other, keeping their type.
func pipe(ctx context.Context, from, to *websocket.Conn) error {
	for {
		typ, rd, err := from.Reader(ctx)
		if err != nil {
			return err
		}
		// A side that stops reading altogether ends the console rather
		// than holding it open forever.
		wctx, cancel := context.WithTimeout(ctx, consoleWriteTimeout)
		err = copyMessage(wctx, to, typ, rd)
		cancel()
		if err != nil {
			return err
		}
	}
}

func copyMessage(ctx context.Context, to *websocket.Conn, typ websocket.MessageType, rd io.Reader) error {
	wr, err := to.Writer(ctx, typ)
	if err != nil {
		return err
	}
	if _, err := io.Copy(wr, rd); err != nil {
		return err
	}
	return wr.Close()
}
