package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// svcLab is a simulated host (package dataplanetest) with the real Plane
// and the network services of the agent, and VMs as namespaces attached
// like a VM's tap: tenants red and blue each have a network "net" on
// 192.168.1.0/24; red has VMs a (.10) and b (.11), blue has a (.10).
type svcLab struct {
	t        testing.TB
	lab      *dataplanetest.Lab
	plane    *dataplane.Linux
	services *routerServices
	dhcp     *dhcpServers
	in       netInputs
	vms      map[string]*dataplanetest.Namespace // by tenant/name
}

func newSvcLab(t testing.TB) *svcLab {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces, bridges and nftables tables")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (apt-get install iproute2)")
	}
	lab, err := dataplanetest.New(dataplanetest.Config{Hosts: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := lab.Hosts[0]
	plane, err := dataplane.New(dataplane.Config{HostNetns: h.Path(), NetnsPrefix: h.RouterPrefix()})
	if err != nil {
		lab.Close()
		t.Fatal(err)
	}
	l := &svcLab{t: t, lab: lab, plane: plane, services: newRouterServices(plane), dhcp: newDHCPServers(plane),
		vms: map[string]*dataplanetest.Namespace{}}
	t.Cleanup(func() {
		l.services.stopAll()
		l.dhcp.stopAll()
		plane.Close()
		if err := lab.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	host := h.Name
	l.in = netInputs{Host: host, Underlay: h.DataplaneUnderlay(), HostAddresses: map[string]netip.Addr{host: h.Underlay},
		Networks: []*api.Network{nsNet("red", "net", 4101), nsNet("blue", "net", 4102)},
		Subnets:  []*api.Subnet{nsSubnet("red", "one", "net", "192.168.1.0/24"), nsSubnet("blue", "one", "net", "192.168.1.0/24")},
		SSHKeys:  []*api.SSHKey{{Metadata: api.ObjectMeta{Tenant: "red", Name: "alice"}, Spec: api.SSHKeySpec{PublicKey: "ssh-ed25519 AAAAalice"}}},
	}
	for _, v := range []struct{ tenant, name, ip, mac string }{
		{"red", "a", "192.168.1.10", "52:54:00:00:00:0a"},
		{"red", "b", "192.168.1.11", "52:54:00:00:00:0b"},
		{"blue", "a", "192.168.1.10", "52:54:00:00:01:0a"},
	} {
		l.in.VMs = append(l.in.VMs, nsVM(v.tenant, v.name, "uid-"+v.tenant+"-"+v.name, host, "net one "+v.ip+" "+v.mac))
		ns, err := lab.NewVM(v.tenant + "-" + v.name)
		if err != nil {
			t.Fatal(err)
		}
		l.vms[v.tenant+"/"+v.name] = ns
	}
	l.apply()
	for _, vm := range l.in.VMs {
		ip := netip.MustParseAddr(vm.Status.Interfaces[0].IP)
		if err := l.vms[vmKey(vm)].Configure(netip.PrefixFrom(ip, 24), netip.MustParseAddr("192.168.1.1")); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// apply does what the network controller does: the state to the Plane
// (each port a veth into its VM's namespace), then the services.
func (l *svcLab) apply() {
	l.t.Helper()
	st := hostNetState(l.in)
	if len(st.Problems) > 0 {
		l.t.Fatalf("problems: %v", st.Problems)
	}
	byPort := map[string]string{}
	for key, ports := range st.Ports {
		for _, p := range ports {
			byPort[p] = key
		}
	}
	for i := range st.State.Networks {
		for j := range st.State.Networks[i].Ports {
			p := &st.State.Networks[i].Ports[j]
			p.Veth = &dataplane.VethPeer{Netns: l.vms[byPort[p.Name]].Path()}
		}
	}
	if err := l.plane.Apply(context.Background(), st.State); err != nil {
		l.t.Fatal(err)
	}
	l.services.sync(context.Background(), l.in, st, nil)
	l.dhcp.sync(context.Background(), st, nil)
}

// in runs fn in the VM's namespace (its sockets stay there).
func (l *svcLab) inVM(vm string, fn func() error) error {
	return netns.Do(l.vms[vm].NS, fn)
}

// lookup asks the VM's gateway for name.
func (l *svcLab) lookup(vm, name string, qtype uint16) (*dns.Msg, error) {
	var conn net.Conn
	if err := l.inVM(vm, func() (err error) {
		conn, err = net.Dial("udp4", "192.168.1.1:53")
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	m, _, err := c.ExchangeWithConn(q, &dns.Conn{Conn: conn})
	return m, err
}

// metadata fetches path from 169.254.169.254 as the VM, from source
// address from (its own when invalid).
func (l *svcLab) metadata(vm, path string, from netip.Addr) (int, string, error) {
	var conn net.Conn
	err := l.inVM(vm, func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second}
		if from.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
		}
		conn, err = d.Dial("tcp4", "169.254.169.254:80")
		return err
	})
	if err != nil {
		return 0, "", err
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
	resp, err := c.Get("http://169.254.169.254" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func aOf(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.PTR:
			out = append(out, r.Ptr)
		}
	}
	return fmt.Sprintf("%s %s", dns.RcodeToString[m.Rcode], strings.Join(out, ","))
}

// TestRouterServices: from namespaces attached like VMs, each tenant's
// DNS answers its own names only (the other tenant's VM of the same name
// at the same address is not even seen), each VM reads its own metadata,
// a NIC that borrows another's address gets nothing, and a VM that goes
// is gone from both at the next sync.
func TestRouterServices(t *testing.T) {
	l := newSvcLab(t)
	tests := []struct {
		vm, name string
		qtype    uint16
		want     string
	}{
		{"red/a", "b", dns.TypeA, "NOERROR 192.168.1.11"},
		{"red/a", "b.net.red.hearth", dns.TypeA, "NOERROR 192.168.1.11"},
		{"red/b", "a", dns.TypeA, "NOERROR 192.168.1.10"},
		{"red/a", "11.1.168.192.in-addr.arpa", dns.TypePTR, "NOERROR b.net.red.hearth."},
		{"blue/a", "a", dns.TypeA, "NOERROR 192.168.1.10"},
		{"blue/a", "10.1.168.192.in-addr.arpa", dns.TypePTR, "NOERROR a.net.blue.hearth."},
		// Across tenants: nothing.
		{"blue/a", "b", dns.TypeA, "NXDOMAIN "},
		{"blue/a", "b.net.red.hearth", dns.TypeA, "NXDOMAIN "},
		{"blue/a", "11.1.168.192.in-addr.arpa", dns.TypePTR, "NXDOMAIN "},
		{"red/a", "a.net.blue.hearth", dns.TypeA, "NXDOMAIN "},
		// No upstream: the world fails, quickly.
		{"red/a", "example.org", dns.TypeA, "SERVFAIL "},
	}
	for _, tt := range tests {
		m, err := l.lookup(tt.vm, tt.name, tt.qtype)
		if err != nil {
			t.Errorf("%s asking %s: %v", tt.vm, tt.name, err)
			continue
		}
		if got := aOf(m); got != tt.want {
			t.Errorf("%s asking %s = %q, want %q", tt.vm, tt.name, got, tt.want)
		}
	}

	for _, tt := range []struct{ vm, path, want string }{
		{"red/a", "/latest/meta-data/instance-id", "uid-red-a"},
		{"red/b", "/latest/meta-data/instance-id", "uid-red-b"},
		{"red/b", "/latest/meta-data/local-ipv4", "192.168.1.11"},
		{"red/a", "/latest/meta-data/public-keys/0/openssh-key", "ssh-ed25519 AAAAalice\n"},
		{"blue/a", "/latest/meta-data/instance-id", "uid-blue-a"},
		{"blue/a", "/nocloud/meta-data", "instance-id: \"uid-blue-a\"\nlocal-hostname: \"a\"\n"},
	} {
		code, body, err := l.metadata(tt.vm, tt.path, netip.Addr{})
		if err != nil || code != 200 || body != tt.want {
			t.Errorf("%s GET %s = %d %q %v, want 200 %q", tt.vm, tt.path, code, body, err, tt.want)
		}
	}

	// red/b borrows red/a's address: the router's answer goes to a's MAC,
	// so b never gets a connection, let alone a's data.
	if _, err := l.vms["red/b"].IP("addr", "add", "192.168.1.10/32", "dev", dataplanetest.VMLink); err != nil {
		t.Fatal(err)
	}
	if code, body, err := l.metadata("red/b", "/latest/meta-data/instance-id", netip.MustParseAddr("192.168.1.10")); err == nil {
		t.Errorf("red/b sending as red/a got %d %q; want no connection", code, body)
	}
	if _, err := l.vms["red/b"].IP("addr", "del", "192.168.1.10/32", "dev", dataplanetest.VMLink); err != nil {
		t.Fatal(err)
	}

	// b goes: its name and its metadata with it, at once.
	var kept []*api.VirtualMachine
	for _, vm := range l.in.VMs {
		if vmKey(vm) != "red/b" {
			kept = append(kept, vm)
		}
	}
	l.in.VMs = kept
	start := time.Now()
	l.apply()
	if m, err := l.lookup("red/a", "b", dns.TypeA); err != nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("b after it went: %v %v", m, err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("b's going took %s to show", time.Since(start))
	}
}

// TestRouterServicesDHCP: a VM's lease names the gateway as its DNS
// server and the network's domain, and routes the metadata address
// through the gateway; the VM's first metadata request right after it is
// answered.
func TestRouterServicesDHCP(t *testing.T) {
	l := newSvcLab(t)
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0x03, 1}
	l.in.VMs = append(l.in.VMs, nsVM("red", "d", "uid-red-d", l.in.Host, "net one 192.168.1.20 "+mac.String()))
	ns, err := l.lab.NewVM("red-d")
	if err != nil {
		t.Fatal(err)
	}
	l.vms["red/d"] = ns
	l.apply()
	got, err := dhcpLease(ns, mac)
	if err != nil {
		t.Fatal(err)
	}
	want := lease{IP: netip.MustParseAddr("192.168.1.20"), Router: netip.MustParseAddr("192.168.1.1"), Prefix: 24,
		DNS: addrs("192.168.1.1"), Domain: "net.red.hearth",
		Routes: []string{"0.0.0.0/0 via 192.168.1.1", "169.254.169.254/32 via 192.168.1.1"}}
	got.At = time.Time{}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lease = %+v, want %+v", got, want)
	}
	if code, body, err := l.metadata("red/d", "/latest/meta-data/local-ipv4", netip.Addr{}); err != nil || code != 200 || body != "192.168.1.20" {
		t.Errorf("d's first metadata answer: %d %q %v", code, body, err)
	}
}

// TestRouterServicesStartFailure: a network whose DNS cannot start (its
// port taken in the router) is said in the Host's NetworkReady
// condition, once however many syncs fail, and the next sync after the
// port is free starts it; the other network is served throughout.
func TestRouterServicesStartFailure(t *testing.T) {
	l := newSvcLab(t)
	l.services.stopAll()
	// Something else holds port 53 in red's router.
	var squatter net.PacketConn
	err := netns.DoNamed(l.plane.RouterNetns(4101), func() (err error) {
		squatter, err = net.ListenPacket("udp4", ":53")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()

	report := newNetReport()
	var events int
	issues := func() []netIssue {
		return servicesIssues(l.services.sync(context.Background(), l.in, hostNetState(l.in), nil))
	}
	for range 3 {
		cond, fresh, _ := report.update(issues(), time.Now())
		events += len(fresh)
		if cond.Status != api.ConditionFalse || cond.Reason != api.NetworkDNSFailed || !strings.Contains(cond.Message, "network red/net: its DNS and metadata servers cannot start") {
			t.Fatalf("NetworkReady = %s %s %q, want False %s naming red/net", cond.Status, cond.Reason, cond.Message, api.NetworkDNSFailed)
		}
	}
	if events != 1 {
		t.Errorf("%d events for one lasting failure, want 1", events)
	}
	if m, err := l.lookup("blue/a", "a", dns.TypeA); err != nil || aOf(m) != "NOERROR 192.168.1.10" {
		t.Errorf("blue's DNS while red's cannot start: %v %v", m, err)
	}

	squatter.Close()
	cond, _, resolved := report.update(issues(), time.Now())
	if cond.Status != api.ConditionTrue || !resolved {
		t.Errorf("after the port is free: NetworkReady %s %q (resolved %v), want True", cond.Status, cond.Message, resolved)
	}
	if m, err := l.lookup("red/a", "b", dns.TypeA); err != nil || aOf(m) != "NOERROR 192.168.1.11" {
		t.Errorf("red's DNS once it started: %v %v", m, err)
	}
}
