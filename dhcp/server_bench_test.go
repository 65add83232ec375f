package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"hearth.dev/hearth/netns"
)

// BenchmarkDORA runs a DISCOVER and a REQUEST through the server's packet
// path (parse, lease table, reply, send) for rotating clients, as relayed
// packets to an address of the server namespace's loopback, without a
// client reading them.
func BenchmarkDORA(b *testing.B) {
	requireRootB(b)
	n := newNetB(b)
	cfg := fullConfig()
	cfg.Subnet = netip.MustParsePrefix("10.77.0.0/16")
	cfg.PoolStart, cfg.PoolEnd = ip("10.77.1.0"), ip("10.77.255.254")
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var conn *net.UDPConn
	if err := netns.Do(n.Server, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	w := newWorker(s, conn, ServerPort)
	const clients = 50000
	disc := make([][]byte, clients)
	reqs := make([][]byte, clients)
	ctx := context.Background()
	from := netip.MustParseAddrPort("127.0.0.1:67")
	for i := range clients {
		mac := net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		p := discover(mac, uint32(i))
		p.GIAddr = ip("127.0.0.1")
		disc[i] = p.Marshal()
		p.SetMessageType(MsgRequest)
		p.SetIPs(OptServerID, serverIP)
		reqs[i] = p.Marshal()
	}
	// The address of each client is known after its first DISCOVER; the
	// REQUEST must name it, so warm up once.
	for i := range clients {
		w.in.Unmarshal(disc[i])
		w.handle(ctx, from)
		w.in.Unmarshal(reqs[i])
		w.in.SetIPs(OptRequestedIP, w.out.YIAddr)
		reqs[i] = w.in.Marshal()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.in.Unmarshal(disc[i])
		w.handle(ctx, from)
		w.in.Unmarshal(reqs[i])
		w.handle(ctx, from)
		if w.out.MessageType() != MsgAck {
			b.Fatalf("client %d: %v", i, w.out.String())
		}
		i = (i + 1) % clients
	}
}
