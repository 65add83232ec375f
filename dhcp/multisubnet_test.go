package dhcp

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hearth.dev/hearth/dhcp/dhcptest"
	"hearth.dev/hearth/netns"
)

// TestUnicastRenewReachesItsSubnetsServer: two servers share one
// interface and port 67, one per subnet, as a tenant network's subnets do
// on their router's leg. busybox udhcpc gets its address from the second
// subnet's server (by broadcast, which both hear; the first has no lease
// for it and stays silent), then renews by unicast to that server's
// address (SIGUSR1): the renewal must reach that server and be ACKed.
// Without ListenServerIP the kernel hands the unicast to one socket of
// the port, the first server's, which ignores it.
func TestUnicastRenewReachesItsSubnetsServer(t *testing.T) {
	n := newNet(t)
	requireTool(t, "busybox", "busybox")
	other := netip.MustParsePrefix("10.78.0.1/24")
	if err := n.AddAddr(n.Server, dhcptest.ServerLink, other); err != nil {
		t.Fatal(err)
	}
	leased := netip.MustParseAddr("10.78.0.50")
	mine := &fakeHandler{decide: func(r Request) Decision {
		if r.MAC.String() == clientMAC.String() {
			return Decision{IP: leased}
		}
		return Decision{Ignore: true}
	}}
	notMine := &fakeHandler{decide: func(Request) Decision { return Decision{Ignore: true} }}
	// The client's server first, so that the other one bound last,
	// which the kernel would pick for a unicast among equals.
	serve(t, n, Config{Interface: dhcptest.ServerLink, ServerIP: other.Addr(), ListenServerIP: true, Mode: ModeFull,
		Subnet: other.Masked(), Router: other.Addr(), LeaseTime: 10 * time.Minute, Handler: mine})
	serve(t, n, Config{Interface: dhcptest.ServerLink, ServerIP: serverIP, ListenServerIP: true, Mode: ModeFull,
		Subnet: serverNet.Masked(), Router: serverIP, LeaseTime: 10 * time.Minute, Handler: notMine})

	dir := t.TempDir()
	script, events := filepath.Join(dir, "script"), filepath.Join(dir, "events")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
deconfig) busybox ip addr flush dev "$interface" ;;
bound|renew) busybox ip addr replace "$ip/$mask" dev "$interface"; echo "$1 $ip" >> `+events+` ;;
esac
exit 0
`), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "busybox", "udhcpc", "-i", dhcptest.ClientLink, "-f", "-t", "3", "-T", "1", "-s", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Start(n.Client, cmd); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitFor := func(line string) bool {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			b, _ := os.ReadFile(events)
			if strings.Contains(string(b), line) {
				return true
			}
		}
		return false
	}
	if !waitFor("bound " + leased.String()) {
		t.Fatalf("udhcpc was never bound to %s:\n%s", leased, out.String())
	}
	before := len(mine.timeline())
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if !waitFor("renew " + leased.String()) {
		t.Fatalf("the unicast renewal was not answered; the client's server saw %v, the other %v; udhcpc:\n%s",
			mine.timeline(), notMine.timeline(), out.String())
	}
	mine.waitEvents(t, before+1)
	if got := mine.timeline()[before:]; len(got) == 0 || got[0] != "REQUEST>ACK" {
		t.Errorf("after the renewal the client's server saw %v, want REQUEST>ACK", got)
	}
	// A client whose unicast renewal goes unanswered for a while (a
	// loaded machine) rebinds by broadcast, with its address in ciaddr
	// too, and a broadcast reaches every server on the link. So count:
	// every broadcast reaches both servers, and only the unicasts tell
	// them apart. The client's server must have had more renewals than
	// the other (the unicast); had the other got the unicast, the
	// client's server would have had only the broadcast copies, fewer.
	time.Sleep(200 * time.Millisecond) // a broadcast copy still on its way
	renewals := func(h *fakeHandler) (n int, last Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, r := range h.reqs {
			if r.Type == MsgRequest && r.ClientIP.IsValid() && !r.ClientIP.IsUnspecified() {
				n, last = n+1, r
			}
		}
		return n, last
	}
	got, _ := renewals(mine)
	theirs, last := renewals(notMine)
	if got <= theirs {
		t.Errorf("the other subnet's server got the unicast renewal: the client's server had %d renewals, the other %d (%+v)", got, theirs, last)
	}
}
