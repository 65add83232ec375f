// Package pingtest pings an address from a network namespace at a steady
// rate and keeps when the answers came: how tests see a VM's network the
// way a peer does, such as the longest silence across a live migration
// (the agent's migration test and the shared-storage sandbox's e2e).
package pingtest

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"hearth.dev/hearth/netns"
)

// Pinger sends ICMP echo requests to one address every interval and
// records the time of each reply.
type Pinger struct {
	conn    *icmp.PacketConn
	dst     netip.Addr
	id      int
	stopc   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	sent    int
	replies []time.Time
	stopped time.Time
}

// ids tells pingers of one process apart: each has its own echo id.
var ids atomic.Int32

// Start pings dst (IPv4) from the namespace named ns every interval
// until Stop (or the end of the test).
func Start(t testing.TB, ns string, dst netip.Addr, every time.Duration) *Pinger {
	t.Helper()
	p := &Pinger{dst: dst, id: (os.Getpid() + int(ids.Add(1))) & 0xffff, stopc: make(chan struct{})}
	err := netns.DoNamed(ns, func() error {
		var err error
		p.conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		t.Fatalf("listening for ICMP in %s: %v", ns, err)
	}
	t.Cleanup(func() { p.conn.Close() })
	p.wg.Add(2)
	go p.send(every)
	go p.receive()
	return p
}

func (p *Pinger) send(every time.Duration) {
	defer p.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-p.stopc:
			return
		case <-tick.C:
		}
		b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("hearth-pingtest")}}).Marshal(nil)
		if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: p.dst.AsSlice()}); err == nil {
			p.mu.Lock()
			p.sent++
			p.mu.Unlock()
		}
	}
}

func (p *Pinger) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if a, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP); !ok || a.Unmap() != p.dst {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == p.id {
			p.mu.Lock()
			p.replies = append(p.replies, time.Now())
			p.mu.Unlock()
		}
	}
}

// Counts says how many pings went out and came back so far, and the
// longest time between two answers or from the last one to now (or to
// Stop): a silence to the end counts.
func (p *Pinger) Counts() (sent, got int, gap time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 1; i < len(p.replies); i++ {
		gap = max(gap, p.replies[i].Sub(p.replies[i-1]))
	}
	end := p.stopped
	if end.IsZero() {
		end = time.Now()
	}
	if n := len(p.replies); n > 0 {
		gap = max(gap, end.Sub(p.replies[n-1]))
	}
	return p.sent, len(p.replies), gap
}

// Stop ends the pings, waits a moment for the last answers, and returns
// the counts.
func (p *Pinger) Stop() (sent, got int, gap time.Duration) {
	p.mu.Lock()
	p.stopped = time.Now()
	p.mu.Unlock()
	close(p.stopc)
	time.Sleep(200 * time.Millisecond) // the last answers
	p.conn.Close()
	p.wg.Wait()
	return p.Counts()
}
