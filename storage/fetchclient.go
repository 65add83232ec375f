package storage

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"hearth.dev/hearth/api/v1alpha1"
)

// FetchPolicy says which addresses a download may connect to, beyond the
// rule every download follows (v1alpha1.FetchAddrRefusal: never loopback,
// unspecified, link-local or the metadata address).
type FetchPolicy struct {
	// Refuse are more addresses never to connect to: the fetching
	// machine's own (an agent's underlay address, where its endpoints
	// listen).
	Refuse []netip.Addr
	// Allow lets connections to these prefixes through although the rule
	// refuses them. It exists for tests that serve images on loopback and
	// is no flag: on a real machine it would reopen what the rule closes.
	Allow []netip.Prefix
}

// check returns why the policy refuses a connection to ip, or nil.
func (p FetchPolicy) check(ip netip.Addr) error {
	ip = ip.Unmap()
	for _, r := range p.Refuse {
		if r.Unmap() == ip {
			return fmt.Errorf("%s is this machine's own address", ip)
		}
	}
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return nil
		}
	}
	if why := v1alpha1.FetchAddrRefusal(ip); why != "" {
		return fmt.Errorf("%s %s", ip, why)
	}
	return nil
}

// NewFetchClient returns the http.Client agents and the boot service fetch
// images, kernels and initrds with, for URLs that tenants and
// administrators write. It checks every connection it makes against the
// policy on the address it actually dials, after DNS and on every
// redirect, so neither a name that resolves to 127.0.0.1 nor a redirect
// there reaches etcd, the agent's endpoints or the metadata service. It
// carries no credential, uses no proxy (a proxy would make the connection
// for it, unchecked) and has no overall timeout, since images are large:
// bound each request with its context.
func NewFetchClient(p FetchPolicy) *http.Client {
	dialer := &net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("refusing to connect to %s: not an IP address and port", address)
			}
			if err := p.check(ap.Addr()); err != nil {
				return fmt.Errorf("refusing to connect: %w (Hearth fetches nothing from the machine it runs on, or from link-local addresses)", err)
			}
			return nil
		},
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		DisableCompression:    true,
	}}
}
