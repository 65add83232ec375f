package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/netns"
)

// The sandbox's stand-in for the internet: a namespace PREFIX-internet
// holding a bridge (internetBridge) with the external network's gateway
// address (.1 of Config.External) and an HTTP server on it answering
// GET / with InternetGreeting; and, in every host, a bridge
// (HostExternalBridge) joined to it by a veth. The ExternalNetwork
// ExternalNetworkName says so to the API, and each agent is started with
// --external-interface NAME=HostExternalBridge, so tenant routers plug
// their external legs into it: a VM's traffic out is SNATed by its
// host's router onto this network, and a floating IP is reached from
// PREFIX-internet.
//
// The internet has IPv6 too: ::1 of Config.External6 on its bridge, the
// ExternalNetwork's spec.ipv6, and an on-link route for Config.Routed6,
// as an upstream router has for the prefixes it delegates. So a prefix
// the ExternalNetwork delegates to a tenant inside Routed6 makes the
// tenant's VMs there reachable from PREFIX-internet by their own IPv6
// addresses (each host's router answers neighbour solicitations for its
// own VMs).
//
// PREFIX-internet does not forward and has no other link: it is the end
// of the road, like the rest of the sandbox it never reaches the
// machine's real networks.
const (
	// ExternalNetworkName is the sandbox's ExternalNetwork.
	ExternalNetworkName = "internet"
	// HostExternalBridge is each host's link to it.
	HostExternalBridge = "ext0"
	// InternetGreeting is what GET / answers in PREFIX-internet.
	InternetGreeting = "hearth-sandbox-internet"
	// DefaultExternalCIDR is the internet's addresses.
	DefaultExternalCIDR = "172.31.253.0/24"
	// DefaultExternal6CIDR is the internet's IPv6 link.
	DefaultExternal6CIDR = "fd68:172:31:253::/64"
	// DefaultRouted6CIDR is what the internet treats as on-link towards
	// the hosts: where the ExternalNetwork's delegated prefixes go.
	DefaultRouted6CIDR = "fd00::/16"

	internetBridge   = "inet0"
	hostUplink       = "uplink"
	internetHTTPPort = 80
	internetLog      = "internet.log"
	// Routers and floating IPs take addresses from .10 to .250.
	externalRangeStart = 10
	externalRangeEnd   = 250
)

// InternetServeCommand is the hidden subcommand of the hearth binary that
// serves the internet's HTTP: `hearth sandbox serve-internet ADDR:PORT`.
var InternetServeCommand = []string{"sandbox", "serve-internet"}

// Internet is the sandbox's internet namespace.
type Internet struct {
	Netns string `json:"netns"`
	CIDR  string `json:"cidr"`
	// Gateway is the internet side's address, where the HTTP server
	// listens (port 80).
	Gateway string   `json:"gateway"`
	HTTP    *Process `json:"http,omitempty"`
	// CIDR6 and Gateway6 are its IPv6 link and address there; Routed6
	// the range it sends to the hosts' routers (on-link).
	CIDR6    string `json:"cidr6,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
	Routed6  string `json:"routed6,omitempty"`
}

// URL is the internet HTTP server's.
func (i Internet) URL() string {
	return "http://" + net.JoinHostPort(i.Gateway, strconv.Itoa(internetHTTPPort)) + "/"
}

// buildInternet makes PREFIX-internet and plugs every host into it.
func (s *Sandbox) buildInternet() error {
	gw := addrAt(s.cfg.External, 1)
	gw6 := s.cfg.External6.Masked().Addr().Next()
	in := &Internet{Netns: s.names.internet(), CIDR: s.cfg.External.String(), Gateway: gw.String(),
		CIDR6: s.cfg.External6.String(), Gateway6: gw6.String(), Routed6: s.cfg.Routed6.String()}
	s.State.Internet = in
	if err := s.State.save(); err != nil {
		return err
	}
	ins, err := s.newNetns(in.Netns)
	if err != nil {
		return err
	}
	defer ins.Close()
	ih, err := netlink.NewHandleAt(ins)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", in.Netns, err)
	}
	defer ih.Close()
	if err := linkUp(ih, "lo"); err != nil {
		return fmt.Errorf("%s: %w", in.Netns, err)
	}
	if err := netns.DoNamed(in.Netns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644)
	}); err != nil {
		return fmt.Errorf("turning forwarding off in %s: %w", in.Netns, err)
	}
	if err := ih.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: internetBridge}}); err != nil {
		return fmt.Errorf("creating bridge %s in %s: %w", internetBridge, in.Netns, err)
	}
	if err := addressUp(ih, in.Netns, internetBridge, netip.PrefixFrom(gw, s.cfg.External.Bits())); err != nil {
		return err
	}
	if err := internet6(ih, in.Netns, netip.PrefixFrom(gw6, s.cfg.External6.Bits()), s.cfg.Routed6); err != nil {
		return err
	}
	for _, h := range s.State.Hosts {
		if err := s.plugHostIntoInternet(h, ins, ih); err != nil {
			return err
		}
	}
	return nil
}

// internet6 gives the internet's bridge its IPv6 address (no duplicate
// detection: it is the link's only router) and the on-link route to the
// delegated range.
func internet6(ih *netlink.Handle, nsName string, addr, routed netip.Prefix) error {
	l, err := ih.LinkByName(internetBridge)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", internetBridge, nsName, err)
	}
	a := ipNet(addr.Addr(), addr.Bits())
	a.Flags = unix.IFA_F_NODAD
	if err := ih.AddrAdd(l, a); err != nil {
		return fmt.Errorf("addressing %s in %s with %s: %w", internetBridge, nsName, addr, err)
	}
	if err := ih.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(routed.Addr(), routed.Bits()).IPNet, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("routing %s on-link in %s: %w", routed, nsName, err)
	}
	return nil
}

// plugHostIntoInternet gives host h its bridge ext0, with a veth (uplink)
// to the internet's bridge. The host itself has no address there: only
// the routers' external legs do.
func (s *Sandbox) plugHostIntoInternet(h Host, ins netns.Handle, ih *netlink.Handle) error {
	hostNs, err := netns.Open(h.Netns)
	if err != nil {
		return err
	}
	defer hostNs.Close()
	hh, err := netlink.NewHandleAt(hostNs)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", h.Netns, err)
	}
	defer hh.Close()
	if err := hh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: HostExternalBridge}}); err != nil {
		return fmt.Errorf("creating bridge %s in %s: %w", HostExternalBridge, h.Netns, err)
	}
	_ = netns.Do(hostNs, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+HostExternalBridge+"/disable_ipv6", []byte("1"), 0o644)
	})
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostUplink, Namespace: netlink.NsFd(hostNs)},
		PeerName:      h.Name,
		PeerNamespace: netlink.NsFd(ins),
	}
	if err := ih.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s (%s) – %s (%s): %w", hostUplink, h.Netns, h.Name, s.names.internet(), err)
	}
	if err := plugIntoBridge(ih, h.Name, internetBridge); err != nil {
		return err
	}
	if err := plugIntoBridge(hh, hostUplink, HostExternalBridge); err != nil {
		return err
	}
	return linkUp(hh, HostExternalBridge)
}

// StartInternet starts the internet's HTTP server and makes the
// ExternalNetwork that stands for it.
func (s *Sandbox) StartInternet(ctx context.Context) error {
	in := s.State.Internet
	if in == nil {
		return errors.New("the internet namespace is not built")
	}
	// Every address of the namespace: the IPv4 and the IPv6 gateway.
	listen := net.JoinHostPort("", strconv.Itoa(internetHTTPPort))
	if err := s.addPath(s.internetLog()); err != nil {
		return err
	}
	argv := s.Command(in.Netns, append(append([]string{s.cfg.Executable}, InternetServeCommand...), listen)...).Args
	p, err := startDaemon(argv, s.internetLog())
	if p != nil {
		in.HTTP = p
		if serr := s.State.save(); serr != nil {
			return serr
		}
	}
	if err != nil {
		return fmt.Errorf("the internet's HTTP server: %w", err)
	}
	c, err := s.Client()
	if err != nil {
		return err
	}
	x := &api.ExternalNetwork{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "ExternalNetwork"},
		Metadata: api.ObjectMeta{Name: ExternalNetworkName, Labels: map[string]string{"hearth.dev/sandbox": "internet"}},
		Spec: api.ExternalNetworkSpec{Description: "the sandbox's internet (namespace " + in.Netns + ")", Site: s.cfg.Site,
			CIDR: in.CIDR, Gateway: in.Gateway,
			RangeStart: addrAt(s.cfg.External, externalRangeStart).String(), RangeEnd: addrAt(s.cfg.External, externalRangeEnd).String()}}
	if in.CIDR6 != "" {
		x.Spec.IPv6 = &api.ExternalIPv6{CIDR: in.CIDR6, Gateway: in.Gateway6}
	}
	if _, err := c.Create(ctx, x); err != nil && !api.IsAlreadyExists(err) {
		return fmt.Errorf("making the external network %s: %w", ExternalNetworkName, err)
	}
	return nil
}

func (s *Sandbox) internetLog() string { return filepath.Join(s.cfg.Dir, internetLog) }

// ServeInternet answers GET / with InternetGreeting on addr until ctx
// ends: the internet's web site, run inside PREFIX-internet.
func ServeInternet(ctx context.Context, addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, InternetGreeting)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
