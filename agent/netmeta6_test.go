package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// metadata6 fetches path from [fe80::a9fe:a9fe] as the VM, from source
// address from (the kernel's pick when invalid), retrying for a few
// seconds while the VM's link-local address is still tentative.
func (l *svcLab) metadata6(vm, path string, from netip.Addr) (int, string, error) {
	var conn net.Conn
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		err = l.inVM(vm, func() (err error) {
			d := net.Dialer{Timeout: 2 * time.Second}
			if from.IsValid() {
				d.LocalAddr = &net.TCPAddr{IP: from.AsSlice(), Zone: dataplanetest.VMLink}
			}
			to := net.JoinHostPort(dataplane.MetadataAddress6.WithZone(dataplanetest.VMLink).String(), "80")
			conn, err = d.Dial("tcp6", to)
			return err
		})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return 0, "", err
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
	resp, err := c.Get("http://[fe80::a9fe:a9fe]" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestMetadataOverIPv6: on a network with IPv6, a VM reads its own
// metadata at [fe80::a9fe:a9fe] from its link-local or its IPv6 address;
// another VM reads its own, never the first's, gets 403 from an address
// that is not its NIC's in the API, and nothing from the first's
// link-local address.
func TestMetadataOverIPv6(t *testing.T) {
	l := newSvcLab(t)
	l.in.Subnets = append(l.in.Subnets, nsSubnet("red", "six", "net", "fd00:1::/64"))
	dMAC, eMAC := "52:54:00:00:06:0d", "52:54:00:00:06:0e"
	d := nsVM("red", "d", "uid-red-d", l.in.Host, "net one 192.168.1.30 "+dMAC)
	d.Status.Interfaces[0].IPv6Subnet, d.Status.Interfaces[0].IPv6 = "six", "fd00:1::5054:ff:fe00:60d"
	e := nsVM("red", "e", "uid-red-e", l.in.Host, "net one 192.168.1.31 "+eMAC) // IPv4 only
	l.in.VMs = append(l.in.VMs, d, e)
	for _, name := range []string{"d", "e"} {
		ns, err := l.lab.NewVM("red-" + name)
		if err != nil {
			t.Fatal(err)
		}
		l.vms["red/"+name] = ns
	}
	// The services started before the network had IPv6: they follow.
	l.apply()
	for _, v := range []struct {
		vm   string
		addr string
	}{{"red/d", "fd00:1::5054:ff:fe00:60d/64"}, {"red/e", "fd00:1::5054:ff:fe00:60e/64"}} {
		ns := l.vms[v.vm]
		if err := ns.Configure(netip.MustParsePrefix(v.addr), netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	dLL := dataplane.LinkLocal(hw(dMAC))
	eLL := dataplane.LinkLocal(hw(eMAC))

	for _, tt := range []struct {
		vm   string
		from netip.Addr
		code int
		want string
	}{
		{"red/d", dLL, 200, "uid-red-d"},
		{"red/d", netip.MustParseAddr("fd00:1::5054:ff:fe00:60d"), 200, "uid-red-d"},
		{"red/e", eLL, 200, "uid-red-e"},
		// e's SLAAC address is its own on the wire (anti-spoofing lets
		// it through) but no NIC's in the API: refused.
		{"red/e", netip.MustParseAddr("fd00:1::5054:ff:fe00:60e"), 403, ""},
	} {
		code, body, err := l.metadata6(tt.vm, "/latest/meta-data/instance-id", tt.from)
		if err != nil || code != tt.code || (tt.code == 200 && body != tt.want) {
			t.Errorf("%s from %s: %d %q %v, want %d %q", tt.vm, tt.from, code, body, err, tt.code, tt.want)
		}
	}

	// e borrows d's link-local address: no answer reaches it.
	err := netns.Do(l.vms["red/e"].NS, func() error {
		return netns.WriteSysctl("net/ipv6/conf/"+dataplanetest.VMLink+"/accept_dad", "0")
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := l.vms["red/e"].IP("-6", "addr", "add", dLL.String()+"/64", "dev", dataplanetest.VMLink, "nodad"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if code, body, err := l.metadata6("red/e", "/latest/meta-data/instance-id", dLL); err == nil {
		t.Errorf("red/e sending as red/d got %d %q; want no connection", code, body)
	}
}
