package pki

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// SANs derives the names a server listening on listen (such as
// "0.0.0.0:8443", "127.0.0.1:8443", "[::]:8443" or ":8443") is reached by,
// for its serving certificate.
//
// It always includes "localhost", 127.0.0.1, ::1 and the machine's
// hostname. For an unspecified listen address (empty, 0.0.0.0 or ::) it adds
// every address of the machine's interfaces, except link-local ones; for a
// specific IP it adds that IP, and for a host name that name. Each of extra
// is added as an IP address if it parses as one and as a DNS name otherwise,
// for names the machine cannot know, like a load balancer's.
//
// Link-local addresses are left out because a client can only dial them
// with an interface zone, which a certificate cannot name, and because they
// come and go with every tap and bridge, which would reissue the
// certificate on restarts for nothing.
func SANs(listen string, extra []string) (dns []string, ips []net.IP, err error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, nil, fmt.Errorf("derive certificate names from listen address %q: %w; want host:port, such as 0.0.0.0:8443 or :8443", listen, err)
	}
	hostname, err := os.Hostname()
	if err != nil {
		return nil, nil, fmt.Errorf("derive certificate names: get hostname: %w", err)
	}

	var s sanSet
	s.add("localhost")
	s.addIP(net.IPv4(127, 0, 0, 1))
	s.addIP(net.IPv6loopback)
	s.add(hostname)

	listenIP := net.ParseIP(host)
	switch {
	case host == "" || (listenIP != nil && listenIP.IsUnspecified()):
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return nil, nil, fmt.Errorf("derive certificate names for %q: list interface addresses: %w", listen, err)
		}
		for _, addr := range addrs {
			ipNet, ok := addr.(*net.IPNet)
			if !ok || ipNet.IP.IsLinkLocalUnicast() {
				continue
			}
			s.addIP(ipNet.IP)
		}
	default:
		s.add(host)
	}
	for _, e := range extra {
		s.add(e)
	}
	return s.dns, s.ips, nil
}

// sanSet collects DNS names and IP addresses in the order first added,
// without duplicates.
type sanSet struct {
	seen map[string]bool
	dns  []string
	ips  []net.IP
}

// add adds name as an IP address if it parses as one, otherwise as a DNS
// name.
func (s *sanSet) add(name string) {
	name = strings.TrimSpace(name)
	if name == "" {
		return
	}
	if ip := net.ParseIP(strings.Trim(name, "[]")); ip != nil {
		s.addIP(ip)
		return
	}
	key := "dns:" + strings.ToLower(name)
	if s.seen[key] {
		return
	}
	s.mark(key)
	s.dns = append(s.dns, name)
}

func (s *sanSet) addIP(ip net.IP) {
	// The 4-byte form keeps IPv4 addresses short in the certificate and
	// makes them compare equal to the 16-byte form below.
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	key := "ip:" + ip.String()
	if s.seen[key] {
		return
	}
	s.mark(key)
	s.ips = append(s.ips, ip)
}

func (s *sanSet) mark(key string) {
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	s.seen[key] = true
}
