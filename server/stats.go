package server

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/auth"
)

// The short history of a host's or a VM's key figures (CPU, memory, disk
// and network rates: the last hour at the agent's stats interval) is kept
// in memory by the host's agent, and served as subresources:
//
//	GET /apis/hearth.dev/v1alpha1/hosts/NAME/stats
//	GET /apis/hearth.dev/v1alpha1/tenants/T/virtualmachines/NAME/stats
//
// Reading them needs the right to get the Host or the VM; the server
// authorizes the caller exactly as for the object, then asks the agent
// over mutual TLS as it does for console logs. They are for people: a
// host's or boot service's credential reads no figures (an agent has its
// own, and has no business with another host's or its VMs').
// serveHostStats handles GET hosts/NAME/stats.
func (s *Server) serveHostStats(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := forPeople(p, "a host's figures"); err != nil {
		return err
	}
	k, _ := api.KindByName("Host")
	ep, err := s.hostAgent(r, p, target{kind: k, name: r.PathValue("name")})
	if err != nil {
		return err
	}
	if r.Method != http.MethodGet {
		return methodNotAllowed(r)
	}
	return s.proxyStats(w, r, ep, ep.url+"/v1/stats/host")
}

// serveVMStats handles GET tenants/T/virtualmachines/NAME/stats.
func (s *Server) serveVMStats(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := forPeople(p, "a VM's figures"); err != nil {
		return err
	}
	k, _ := api.KindByPlural("virtualmachines")
	ep, err := s.vmAgent(r.Context(), p, target{kind: k, tenant: r.PathValue("tenant"), name: r.PathValue("name")}, auth.Get)
	if err != nil {
		return err
	}
	if r.Method != http.MethodGet {
		return methodNotAllowed(r)
	}
	return s.proxyStats(w, r, ep, ep.path(api.SubresourceStats))
}

// forPeople refuses hosts' and boot services' credentials what is
// served for people only (what says what it is).
func forPeople(p *auth.Principal, what string) error {
	if p.HostCredential() {
		return api.NewForbidden("%s may not read %s: they are for users, not hosts or boot services", p.Name, what)
	}
	return nil
}

// hostAgent authorizes p to get the Host and finds its agent.
func (s *Server) hostAgent(r *http.Request, p *auth.Principal, t target) (agentEndpoint, error) {
	if err := auth.Authorize(p, t.request(auth.Get)); err != nil {
		return agentEndpoint{}, err
	}
	obj, err := s.store.Get(r.Context(), t.kind, "", t.name)
	if err != nil {
		return agentEndpoint{}, err
	}
	req := t.request(auth.Get)
	req.Stored = obj
	if err := auth.Authorize(p, req); err != nil {
		return agentEndpoint{}, err
	}
	h := obj.(*api.Host)
	ep := agentEndpoint{vm: "Host " + t.name, host: t.name}
	ep.url = strings.TrimRight(h.Status.AgentURL, "/")
	ep.pin = strings.ToLower(strings.ReplaceAll(h.Status.AgentCertSHA256, ":", ""))
	if ep.url == "" || ep.pin == "" {
		return ep, api.NewUnavailable("host %s has no agent endpoint yet (its agent publishes status.agentURL and status.agentCertSHA256 when it starts)", t.name)
	}
	if u, err := url.Parse(ep.url); err != nil || u.Scheme != "https" || u.Host == "" {
		return ep, api.NewUnavailable("host %s publishes agentURL %q, which is not an https:// URL", t.name, h.Status.AgentURL)
	}
	return ep, nil
}

func (s *Server) proxyStats(w http.ResponseWriter, r *http.Request, ep agentEndpoint, u string) error {
	hc, err := s.agentClient(ep)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
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
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 8<<20))
	return nil
}
