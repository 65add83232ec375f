package dataplane_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// Security groups on simulated hosts: a server VM whose group allows TCP
// port 80 is reached on 80 from a VM on its own host (which the router
// never sees) and from one on another host, and on no other port; a rule
// added later opens its port within a second; a connection survives a
// rule change that does not concern it; a remote group admits its
// members' addresses only.
func TestSecurityGroups(t *testing.T) {
	c := newCluster(t, 2)
	c.addNet("sg", 200, false, "10.30.0.0/24")
	client := c.addVM("client", "sg", 0, "10.30.0.10")
	server := c.addVM("server", "sg", 0, "10.30.0.11")
	far := c.addVM("far", "sg", 1, "10.30.0.12")
	web := dataplane.SecurityRule{Protocol: "tcp", FromPort: 80, ToPort: 80}
	server.sec = &dataplane.PortSecurity{Ingress: []dataplane.SecurityRule{web}}
	c.apply()

	for _, port := range []int{80, 81, 82} {
		listen(t, server.ns, server.addr, port)
	}
	for _, from := range []*tvm{client, far} {
		dialFrom(t, from.ns, server.addr, 80, 0).Close()
		if err := dial(from.ns, server.addr, 81); err == nil {
			t.Errorf("%s reached port 81, which no rule allows", from.name)
		}
		c.mustNotPing(from.name, server.addr)
	}
	// Broadcast IP does not reach the filtered server (its rules match
	// unicast by MAC), and does reach an unfiltered VM.
	bcast := udpFrame(client.mac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, client.addr, netip.MustParseAddr("10.30.0.255"), 5000, 5001)
	if deliver(t, client.ns, server.ns, bcast) {
		t.Errorf("a UDP broadcast reached the filtered server")
	}
	if !deliver(t, client.ns, far.ns, bcast) {
		t.Errorf("a UDP broadcast did not reach the unfiltered far VM")
	}
	// Unfiltered VMs stay unfiltered, and the server's replies and its
	// own traffic out (no egress rules) pass.
	c.mustPing("server", client.addr)
	c.mustPing("client", far.addr)

	// An established connection, through the change below.
	conn := dialConn(t, client.ns, server.addr, 80)
	defer conn.Close()
	echo(t, conn, "before")

	server.sec = &dataplane.PortSecurity{Ingress: []dataplane.SecurityRule{web, {Protocol: "tcp", FromPort: 81, ToPort: 81}}}
	start := time.Now()
	if err := c.planes[0].Apply(context.Background(), c.state(0)); err != nil {
		t.Fatal(err)
	}
	for dial(client.ns, server.addr, 81) != nil {
		if time.Since(start) > time.Second {
			t.Fatalf("port 81 not open a second after the rule was added")
		}
	}
	t.Logf("a rule added took %s to open its port", time.Since(start))
	echo(t, conn, "after an unrelated rule change")
	if err := dial(client.ns, server.addr, 82); err == nil {
		t.Errorf("port 82 is open; only 80 and 81 are allowed")
	}

	// A remote group: ICMP from the group's members only (the client, not
	// the far VM).
	c.groups = []dataplane.AddressGroup{{Name: "tenant/clients", Addresses: []netip.Addr{client.addr}}}
	server.sec = &dataplane.PortSecurity{Ingress: []dataplane.SecurityRule{web, {Protocol: "icmp", Group: "tenant/clients"}}}
	c.applyStates()
	c.mustPing("client", server.addr)
	c.mustNotPing("far", server.addr)
	echo(t, conn, "after the remote group rule")

	// Egress rules: the server may then only reach what they allow (and
	// still answer what comes in). New connections: pings would ride on
	// the conntrack entries of the pings above.
	listen(t, far.ns, far.addr, 90)
	listen(t, client.ns, client.addr, 90)
	server.sec = &dataplane.PortSecurity{
		Ingress: []dataplane.SecurityRule{web},
		Egress:  []dataplane.SecurityRule{{Protocol: "tcp", FromPort: 90, ToPort: 90, CIDR: netip.MustParsePrefix(far.addr.String() + "/32")}},
	}
	c.applyStates()
	dialFrom(t, server.ns, far.addr, 90, 0).Close()
	if err := dial(server.ns, client.addr, 90); err == nil {
		t.Errorf("server reached client:90, which no egress rule allows")
	}
	// Its network's own services stay reachable: DNS on the gateway.
	gw := netip.MustParseAddr("10.30.0.1")
	var dns net.Listener
	if err := netns.DoNamed(c.planes[0].RouterNetns(200), func() error {
		var err error
		dns, err = net.Listen("tcp", "10.30.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	go func() {
		for {
			conn, err := dns.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	dialFrom(t, server.ns, gw, 53, 0).Close()
	echo(t, conn, "after egress rules")

	// Without groups the port is unfiltered again.
	server.sec = nil
	c.applyStates()
	c.mustPing("far", server.addr)
	dialFrom(t, client.ns, server.addr, 82, 0).Close()
}

// Two tenants' networks on one host with the same addresses: one's
// connections never let the other's packets in. Each network's bridged
// packets are tracked in their own conntrack zone.
func TestSecurityGroupsConntrackZones(t *testing.T) {
	c := newCluster(t, 1)
	c.addNet("a", 301, false, "10.40.0.0/24")
	c.addNet("b", 302, false, "10.40.0.0/24")
	aClient := c.addVM("a-client", "a", 0, "10.40.0.10")
	aServer := c.addVM("a-server", "a", 0, "10.40.0.11")
	bClient := c.addVM("b-client", "b", 0, "10.40.0.10")
	bServer := c.addVM("b-server", "b", 0, "10.40.0.11")
	// Distinct MACs across the networks (the lab gives each VM its own).
	bServer.sec = &dataplane.PortSecurity{} // default deny in
	aServer.sec = &dataplane.PortSecurity{Ingress: []dataplane.SecurityRule{{Protocol: "tcp", FromPort: 80, ToPort: 80}}}
	c.apply()
	listen(t, aServer.ns, aServer.addr, 80)
	listen(t, bServer.ns, bServer.addr, 80)

	// The same connection (addresses and ports) in tenant a, then in b.
	conn := dialFrom(t, aClient.ns, aServer.addr, 80, 40080)
	defer conn.Close()
	echo(t, conn, "tenant a")
	if err := dialFromErr(bClient.ns, bServer.addr, 80, 40080); err == nil {
		t.Fatal("tenant b reached its server's port 80, which its rules deny, through tenant a's connection")
	}
}

// applyStates applies every host's state (without configuring the VMs
// again).
func (c *tcluster) applyStates() {
	c.t.Helper()
	for i, p := range c.planes {
		if err := p.Apply(context.Background(), c.state(i)); err != nil {
			c.t.Fatalf("%s: Apply: %v", c.lab.Hosts[i].Name, err)
		}
	}
}

// listen serves a line echo on addr:port inside a namespace until the
// test ends.
func listen(t *testing.T, ns *dataplanetest.Namespace, addr netip.Addr, port int) {
	t.Helper()
	var l net.Listener
	err := netns.Do(ns.NS, func() error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()
}

// dial connects from a namespace, with a short timeout: a dropped SYN
// is an error.
func dial(ns *dataplanetest.Namespace, addr netip.Addr, port int) error {
	return dialFromErr(ns, addr, port, 0)
}

func dialFromErr(ns *dataplanetest.Namespace, addr netip.Addr, port, localPort int) error {
	conn, err := dialConnFrom(ns, addr, port, localPort)
	if err == nil {
		conn.Close()
	}
	return err
}

func dialConnFrom(ns *dataplanetest.Namespace, addr netip.Addr, port, localPort int) (net.Conn, error) {
	var conn net.Conn
	err := netns.Do(ns.NS, func() error {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		if localPort != 0 {
			d.LocalAddr = &net.TCPAddr{Port: localPort}
		}
		var err error
		conn, err = d.Dial("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
		return err
	})
	return conn, err
}

func dialConn(t *testing.T, ns *dataplanetest.Namespace, addr netip.Addr, port int) net.Conn {
	return dialFrom(t, ns, addr, port, 0)
}

func dialFrom(t *testing.T, ns *dataplanetest.Namespace, addr netip.Addr, port, localPort int) net.Conn {
	t.Helper()
	var conn net.Conn
	var err error
	for range 10 {
		if conn, err = dialConnFrom(ns, addr, port, localPort); err == nil {
			return conn
		}
	}
	t.Fatalf("%s cannot connect to %s:%d: %v", ns.Name, addr, port, err)
	return nil
}

// echo sends a line on an echo connection and checks it comes back.
func echo(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	line := fmt.Sprintf("hearth %s\n", what)
	if _, err := io.WriteString(conn, line); err != nil {
		t.Fatalf("connection %s: %v", what, err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || got != line {
		t.Fatalf("connection %s: read %q, %v; want %q", what, got, err, line)
	}
}
