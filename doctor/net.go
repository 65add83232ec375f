package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Condition types of the network's findings.
const (
	condPorts  = "Ports"
	condServer = "ServerReachable"
	condClock  = "ClockSync"
)

// ports binds each of a role's ports on every address, as the role will,
// and names the process that holds one that is taken.
func ports(want []string) []Finding {
	var out []Finding
	for _, p := range want {
		proto, port, _ := strings.Cut(p, "/")
		f := Finding{Check: "port " + p, Condition: condPorts, Status: OK, Message: p + " is free"}
		var err error
		switch proto {
		case "udp":
			var c net.PacketConn
			if c, err = net.ListenPacket("udp", ":"+port); err == nil {
				c.Close()
			}
		default:
			var l net.Listener
			if l, err = net.Listen("tcp", ":"+port); err == nil {
				l.Close()
			}
		}
		switch {
		case err == nil:
		case errnoOf(err) == unix.EACCES:
			f.Status, f.Message, f.Fix = Skipped, "not tried: "+p+" is a privileged port", "run hearth doctor as root"
		case errnoOf(err) == unix.EADDRINUSE:
			n, _ := strconv.Atoi(port)
			who := portOwner(proto, n)
			f.Status, f.Message = Fail, p+" is in use"
			if who != "" {
				f.Message += " by " + who
			}
			f.Fix = "stop what listens there, or give the role another port (--listen, --etcd-peer-url, --http-listen, --tftp-listen)"
			if strings.Contains(who, "hearth") {
				f.Status = Warn
				f.Message += ": Hearth already runs here"
				f.Fix = "nothing to do if that is the service you are checking for; otherwise stop it first"
			}
		default:
			f.Status, f.Message = Fail, fmt.Sprintf("binding %s: %v", p, err)
		}
		out = append(out, f)
	}
	return out
}

// portOwner names the process holding a listening socket on port, from
// /proc/net (the socket's inode) and /proc/PID/fd, or "" when it cannot
// tell (another user's process, without root).
func portOwner(proto string, port int) string {
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/" + proto, "/proc/net/" + proto + "6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if !ok || err != nil || int(p) != port {
				continue
			}
			if proto == "tcp" && fields[3] != "0A" { // LISTEN
				continue
			}
			inodes["socket:["+fields[9]+"]"] = true
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return ""
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && inodes[target] {
				comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				return fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), pid)
			}
		}
	}
	return ""
}

// storedCredentials is what an agent or boot service keeps of its join in
// its data directory (client.JoinConfig's credentials.json): where the
// server is and its CA; the token is not read.
type storedCredentials struct {
	Server string `json:"server"`
	CA     string `json:"ca"`
}

// reach asks the server for its version over TLS, trusting the cluster CA,
// and compares its clock with this machine's. The server and CA come from
// the options, or else from the credentials a joined agent or boot service
// keeps in dataDir.
func (o Options) reach(ctx context.Context, dataDir string) []Finding {
	f := Finding{Check: "server", Condition: condServer}
	server, caPEM := o.Server, []byte(nil)
	if o.CAFile != "" {
		var err error
		if caPEM, err = os.ReadFile(o.CAFile); err != nil {
			f.Status, f.Message, f.Fix = Fail, "--ca-file: "+err.Error(), "give --ca-file the server's DATA-DIR/ca.crt"
			return []Finding{f}
		}
	}
	if server == "" || caPEM == nil {
		var creds storedCredentials
		if b, err := os.ReadFile(filepath.Join(dataDir, "credentials.json")); err == nil && json.Unmarshal(b, &creds) == nil {
			if server == "" {
				server = creds.Server
			}
			if caPEM == nil && creds.CA != "" {
				caPEM = []byte(creds.CA)
			}
		}
	}
	if server == "" {
		f.Status, f.Message = Skipped, "not tried: no server to reach (this host has not joined yet)"
		f.Fix = "give --server URL and --ca-file (the server's DATA-DIR/ca.crt) to check it can be reached"
		return []Finding{f}
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			f.Status, f.Message, f.Fix = Fail, "the CA file holds no PEM certificate", "give --ca-file the server's DATA-DIR/ca.crt"
			return []Finding{f}
		}
		tlsConf.RootCAs = pool
	}
	// One request: its connection is not kept (an agent runs this check
	// as it starts, and holds one connection of its own after).
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: nil, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+"/version", nil)
	if err != nil {
		f.Status, f.Message, f.Fix = Fail, fmt.Sprintf("server URL %q: %v", server, err), "give --server as https://HOST:PORT"
		return []Finding{f}
	}
	sent := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		f.Status, f.Message, f.Fix = Fail, fmt.Sprintf("cannot reach %s: %v", server, err), reachFix(err)
		return []Finding{f}
	}
	defer resp.Body.Close()
	rtt := time.Since(sent)
	var v struct {
		Version string `json:"version"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&v)
	if resp.StatusCode != http.StatusOK || v.Version == "" {
		f.Status, f.Message = Fail, fmt.Sprintf("%s answers /version with %s: is it a Hearth server?", server, resp.Status)
		f.Fix = "give --server the URL of the Hearth API (the server's --advertise-url)"
		return []Finding{f}
	}
	f.Status, f.Message = OK, fmt.Sprintf("%s answers (Hearth %s, %s)", server, v.Version, since(rtt))
	out := []Finding{f}
	if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		out = append(out, judgeSkew(date.Sub(sent.Add(rtt/2)), rtt))
	}
	return out
}

// maxSkew is the clock difference with the server past which hosts'
// leases and tokens' expiry go wrong: an agent stamps its heartbeats with
// its own clock, and the server declares it NotReady when the stamp is a
// lease (40 s by default) old.
const maxSkew = 5 * time.Second

// judgeSkew compares the server's clock (its Date header, in whole
// seconds) with this machine's at the middle of the request.
func judgeSkew(skew, rtt time.Duration) Finding {
	f := Finding{Check: "clock-skew", Condition: condClock, Status: OK}
	abs := max(skew, -skew)
	// The Date header has whole seconds; allow for that and the trip.
	if abs <= maxSkew+time.Second+rtt {
		f.Message = fmt.Sprintf("this clock and the server's agree (within %s)", since(maxSkew+time.Second))
		return f
	}
	dir := "behind"
	if skew < 0 {
		dir = "ahead of"
	}
	f.Status = Warn
	f.Message = fmt.Sprintf("this clock is %s %s the server's: hosts' leases (their heartbeats carry this clock's time) and tokens' expiry go wrong",
		abs.Round(time.Second), dir)
	f.Fix = "synchronise both clocks: apt-get install systemd-timesyncd (or chrony), and timedatectl set-ntp true"
	return f
}

func reachFix(err error) string {
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var dns *net.DNSError
	switch {
	case errors.As(err, &uerr):
		return "the server's certificate is not from the given CA: give --ca-file the server's DATA-DIR/ca.crt"
	case errors.As(err, &herr):
		return "the server's certificate does not name this address: use the server's --advertise-url, or start the server with --tls-san for it"
	case errors.As(err, &dns):
		return "the server's name does not resolve here: use its IP, or add it to DNS or /etc/hosts"
	case errnoOf(err) == unix.ECONNREFUSED:
		return "nothing listens there: is the server running, and listening on an address this host reaches (--listen 0.0.0.0:8443)?"
	default:
		return "check the address, routes and firewalls between this host and the server (TCP to the API port, 8443 by default)"
	}
}

// clock asks the kernel whether its clock is synchronised (adjtimex: a
// time daemon clears STA_UNSYNC while it keeps the clock in step).
func clock() []Finding {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	f := Finding{Check: "clock", Condition: condClock, Status: OK}
	switch {
	case err != nil:
		f.Status, f.Message = Skipped, "not checked: adjtimex: "+err.Error()
	case state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0:
		f.Status = Warn
		f.Message = "the system clock is not synchronised (no time daemon keeps it in step): leases, tokens' expiry and certificates assume clocks agree"
		f.Fix = "apt-get install systemd-timesyncd (or chrony), then timedatectl set-ntp true"
	default:
		f.Message = fmt.Sprintf("the system clock is synchronised (estimated error %s)", since(time.Duration(tx.Esterror)*time.Microsecond))
	}
	return []Finding{f}
}
