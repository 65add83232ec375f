package agent

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"hearth.dev/hearth/dataplane"
	"hearth.dev/hearth/dataplane/dataplanetest"
	"hearth.dev/hearth/netns"
)

// udhcpcLease runs busybox's udhcpc in the VM's namespace until it has a
// lease (or gives up) and returns the address it was offered.
func udhcpcLease(t *testing.T, vm *dataplanetest.Namespace) (string, error) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	got := filepath.Join(dir, "bound")
	// udhcpc calls the script with the lease in $ip; it only writes it.
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" >"+got+"\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "busybox", "udhcpc", "-i", dataplanetest.VMLink, "-f", "-n", "-q", "-t", "5", "-T", "1", "-s", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := netns.Start(vm.NS, cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return "", &udhcpcError{err: err, out: out.String()}
	}
	b, err := os.ReadFile(got)
	return string(trimNL(b)), err
}

type udhcpcError struct {
	err error
	out string
}

func (e *udhcpcError) Error() string { return "udhcpc: " + e.err.Error() + "\n" + e.out }

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// TestServicesFollowARecreatedLeg: the router's leg on the bridge is
// deleted behind the data plane's back and made again (a new link, a new
// ifindex): a real udhcpc still gets its lease, and DNS and metadata
// still answer, from servers that followed the new leg (sockets bound to
// a device are bound to its ifindex, which the old one took with it).
func TestServicesFollowARecreatedLeg(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("needs busybox (apt-get install busybox-static): its udhcpc is the DHCP client")
	}
	l := newSvcLab(t)
	a := l.vms["red/a"]
	if ip, err := udhcpcLease(t, a); err != nil || ip != "192.168.1.10" {
		t.Fatalf("before: lease %q, %v; want 192.168.1.10", ip, err)
	}

	router := &dataplanetest.Namespace{Name: l.plane.RouterNetns(4101)}
	before, err := router.IP("-o", "link", "show", dataplane.RouterInternalLink)
	if err != nil {
		t.Fatal(err)
	}
	drainChanges(l.plane)
	if out, err := router.IP("link", "del", dataplane.RouterInternalLink); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	select {
	case <-l.plane.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("the plane did not notice the leg going")
	}
	l.apply()
	after, err := router.IP("-o", "link", "show", dataplane.RouterInternalLink)
	if err != nil || after == before {
		t.Fatalf("the leg was not made again: %q, %v", after, err)
	}

	if ip, err := udhcpcLease(t, a); err != nil || ip != "192.168.1.10" {
		t.Errorf("after the leg was made again: lease %q, %v; want 192.168.1.10", ip, err)
	}
	if m, err := l.lookup("red/a", "b", dns.TypeA); err != nil || aOf(m) != "NOERROR 192.168.1.11" {
		t.Errorf("DNS after the leg was made again: %v %v", m, err)
	}
	if code, body, err := l.metadata("red/a", "/latest/meta-data/instance-id", netip.Addr{}); err != nil || code != 200 || body != "uid-red-a" {
		t.Errorf("metadata after the leg was made again: %d %q %v", code, body, err)
	}
}

// drainChanges forgets pending change notifications of a plane.
func drainChanges(p dataplane.Plane) {
	for {
		select {
		case <-p.Changes():
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}
