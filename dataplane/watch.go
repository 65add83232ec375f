package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// The Plane learns that someone else changed what it made from netlink
// events, so that between full reads of the host an Apply touches only
// the networks that changed or drifted. Sockets in the host namespace
// and in every router namespace subscribe to link, neighbour (FDB),
// address and route events, and to nftables changes.
//
// Events the Plane's own changes cause are told apart by when they
// arrive: the kernel queues a notification on every subscribed socket
// before the request that caused it returns, so after converging a
// network the Plane reads what is queued and drops what concerns that
// network ("drain"). What arrives later, or concerns another network,
// is compared with what the Plane made, and marks the network dirty if it
// contradicts it: the next Apply reads that network again and repairs
// it, and Changes says an Apply is due. Events that do not contradict it
// (a tap's carrier coming up when QEMU opens it, bridge learning, the
// router's dynamic neighbours) change nothing. A socket that overflowed
// lost events: the next Apply reads everything.

type sockKind int

const (
	routeSock sockKind = iota
	nftSock
)

type eventSock struct {
	fd     int
	kind   sockKind
	router uint32 // the router namespace's VNI, 0 for the host namespace
}

func (s *eventSock) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// openEventSock subscribes to netlink groups in the calling thread's
// namespace.
func openEventSock(proto int, groups uint32, kind sockKind, router uint32) (*eventSock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return nil, err
	}
	// Room for a burst (a network with many ports made at once) between
	// two drains.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &eventSock{fd: fd, kind: kind, router: router}, nil
}

const nftGroups = 1 << (unix.NFNLGRP_NFTABLES - 1)

func hostEventSocks() ([]*eventSock, error) {
	rt, err := openEventSock(unix.NETLINK_ROUTE, unix.RTMGRP_LINK|unix.RTMGRP_NEIGH, routeSock, 0)
	if err != nil {
		return nil, err
	}
	nf, err := openEventSock(unix.NETLINK_NETFILTER, nftGroups, nftSock, 0)
	if err != nil {
		rt.close()
		return nil, err
	}
	return []*eventSock{rt, nf}, nil
}

func routerEventSocks(vni uint32) ([]*eventSock, error) {
	rt, err := openEventSock(unix.NETLINK_ROUTE, unix.RTMGRP_LINK|unix.RTMGRP_NEIGH|unix.RTMGRP_IPV4_IFADDR|
		unix.RTMGRP_IPV6_IFADDR|unix.RTMGRP_IPV4_ROUTE|unix.RTMGRP_IPV6_ROUTE, routeSock, vni)
	if err != nil {
		return nil, err
	}
	nf, err := openEventSock(unix.NETLINK_NETFILTER, nftGroups, nftSock, vni)
	if err != nil {
		rt.close()
		return nil, err
	}
	return []*eventSock{rt, nf}, nil
}

// watcher polls the event sockets and hands what arrives to the Plane.
type watcher struct {
	p       *Linux
	wake    int // eventfd: the socket set changed, or stop
	mu      sync.Mutex
	socks   map[*eventSock]bool
	host    []*eventSock
	done    chan struct{}
	stopped chan struct{}
}

func newWatcher(p *Linux) (*watcher, error) {
	var host []*eventSock
	err := netns.Do(p.host, func() error {
		var err error
		host, err = hostEventSocks()
		return err
	})
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		for _, s := range host {
			s.close()
		}
		return nil, err
	}
	w := &watcher{p: p, wake: wake, socks: map[*eventSock]bool{}, host: host, done: make(chan struct{}), stopped: make(chan struct{})}
	for _, s := range host {
		w.socks[s] = true
	}
	go w.loop()
	return w, nil
}

func (w *watcher) poke() {
	var one [8]byte
	one[0] = 1
	unix.Write(w.wake, one[:])
}

func (w *watcher) add(socks ...*eventSock) {
	w.mu.Lock()
	for _, s := range socks {
		w.socks[s] = true
	}
	w.mu.Unlock()
	w.poke()
}

// remove stops watching sockets and closes them (under w.mu, where the
// loop reads their descriptors).
func (w *watcher) remove(socks ...*eventSock) {
	w.mu.Lock()
	for _, s := range socks {
		delete(w.socks, s)
		s.close()
	}
	w.mu.Unlock()
	w.poke()
}

// snapshot returns the sockets being watched (the host's and the
// routers') and a poll set for them, the wake descriptor first.
func (w *watcher) snapshot() ([]*eventSock, []unix.PollFd) {
	w.mu.Lock()
	defer w.mu.Unlock()
	socks := make([]*eventSock, 0, len(w.socks))
	fds := make([]unix.PollFd, 0, len(w.socks)+1)
	fds = append(fds, unix.PollFd{Fd: int32(w.wake), Events: unix.POLLIN})
	for s := range w.socks {
		socks = append(socks, s)
		fds = append(fds, unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN})
	}
	return socks, fds
}

func (w *watcher) stop() {
	close(w.done)
	w.poke()
	<-w.stopped
	for _, s := range w.host {
		s.close()
	}
	unix.Close(w.wake)
}

func (w *watcher) loop() {
	defer close(w.stopped)
	for {
		socks, fds := w.snapshot()
		_, err := unix.Poll(fds, -1)
		select {
		case <-w.done:
			return
		default:
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if fds[0].Revents != 0 {
			var buf [8]byte
			unix.Read(w.wake, buf[:])
		}
		var ready []*eventSock
		for i, s := range socks {
			if fds[i+1].Revents&(unix.POLLIN|unix.POLLERR) != 0 {
				ready = append(ready, s)
			}
		}
		if len(ready) == 0 {
			continue
		}
		w.p.mu.Lock()
		if !w.p.closed {
			w.mu.Lock()
			var live []*eventSock
			for _, s := range ready {
				if w.socks[s] {
					live = append(live, s)
				}
			}
			w.mu.Unlock()
			for _, s := range live {
				w.p.readEvents(s, nil)
			}
		}
		w.p.mu.Unlock()
	}
}

// drain reads every event already queued; those about the networks in
// touched (which the Plane has just changed itself) are dropped. p.mu is
// held.
//
// Only the host's sockets and the touched networks' routers' can hold
// events of the Plane's making; the others are left to the watcher.
func (p *Linux) drain(touched map[uint32]bool) {
	if p.watch == nil {
		return
	}
	for _, s := range p.watch.host {
		p.readEvents(s, touched)
	}
	for vni := range touched {
		if r := p.routers[vni]; r != nil {
			for _, s := range r.events {
				p.readEvents(s, touched)
			}
		}
	}
}

func (p *Linux) readEvents(s *eventSock, touched map[uint32]bool) {
	buf := p.evbuf
	for s.fd >= 0 {
		n, _, err := unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		if errors.Is(err, unix.ENOBUFS) {
			// Events were lost: only reading everything is safe.
			if !p.full {
				p.logf("dataplane: netlink events lost; the next Apply reads the whole host")
			}
			p.full = true
			p.signal()
			continue
		}
		if err != nil {
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for i := range msgs {
			p.event(s, &msgs[i], touched)
		}
	}
}

func (p *Linux) event(s *eventSock, m *syscall.NetlinkMessage, touched map[uint32]bool) {
	switch {
	case s.kind == nftSock:
		p.nftEvent(s, m, touched)
	case s.router == 0:
		p.hostEvent(m, touched)
	default:
		p.routerEvent(s.router, m, touched)
	}
}

// markDirty notes that a network may have drifted from what the Plane
// made.
func (p *Linux) markDirty(vni uint32, touched map[uint32]bool, why string) {
	if touched[vni] || p.known[vni] == nil {
		return
	}
	p.dirty[vni] = true
	p.logf("dataplane: network %s (VNI %d) changed behind the Plane's back: %s", p.known[vni].spec.Name, vni, why)
	p.signal()
}

type linkEvent struct {
	index, mtu, master int
	name               string
	up, deleted        bool
	mac                string
}

func parseLinkEvent(m *syscall.NetlinkMessage) (linkEvent, bool) {
	if len(m.Data) < unix.SizeofIfInfomsg {
		return linkEvent{}, false
	}
	ifi := (*unix.IfInfomsg)(unsafe.Pointer(&m.Data[0]))
	e := linkEvent{index: int(ifi.Index), up: ifi.Flags&unix.IFF_UP != 0, deleted: m.Header.Type == unix.RTM_DELLINK}
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return e, false
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFLA_IFNAME:
			e.name = cString(a.Value)
		case unix.IFLA_MTU:
			if len(a.Value) >= 4 {
				e.mtu = int(*(*uint32)(unsafe.Pointer(&a.Value[0])))
			}
		case unix.IFLA_MASTER:
			if len(a.Value) >= 4 {
				e.master = int(*(*uint32)(unsafe.Pointer(&a.Value[0])))
			}
		case unix.IFLA_ADDRESS:
			e.mac = net.HardwareAddr(a.Value).String()
		}
	}
	return e, e.name != ""
}

type neighEvent struct {
	index, state, flags int
	family              int
	mac                 string
	dst                 netip.Addr
	deleted             bool
}

func parseNeighEvent(m *syscall.NetlinkMessage) (neighEvent, bool) {
	if len(m.Data) < unix.SizeofNdMsg {
		return neighEvent{}, false
	}
	nd := (*unix.NdMsg)(unsafe.Pointer(&m.Data[0]))
	e := neighEvent{index: int(nd.Ifindex), state: int(nd.State), flags: int(nd.Flags), family: int(nd.Family), deleted: m.Header.Type == unix.RTM_DELNEIGH}
	for _, a := range parseAttrs(m.Data[unix.SizeofNdMsg:]) {
		switch a.typ {
		case unix.NDA_LLADDR:
			e.mac = net.HardwareAddr(a.value).String()
		case unix.NDA_DST:
			if ip, ok := netip.AddrFromSlice(a.value); ok {
				e.dst = ip.Unmap()
			}
		}
	}
	return e, true
}

func (p *Linux) hostEvent(m *syscall.NetlinkMessage, touched map[uint32]bool) {
	switch m.Header.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		e, ok := parseLinkEvent(m)
		if !ok {
			return
		}
		if e.deleted {
			delete(p.ifnames, e.index)
		} else {
			p.ifnames[e.index] = e.name
		}
		if p.ul.valid && (e.index == p.ul.index || e.name == p.ul.device) {
			if e.deleted || e.mtu != p.ul.mtu || e.name != p.ul.device {
				p.ul.valid = false
				p.full = true
				p.signal()
			}
			return
		}
		vni, ok := p.linkNetwork(e.name)
		if !ok {
			return
		}
		lm, ok := p.known[vni].model.links[e.name]
		if !ok {
			return
		}
		switch {
		case e.deleted:
			p.markDirty(vni, touched, "link "+e.name+" deleted")
		case e.mtu != lm.mtu || e.up != lm.up || p.ifnames[e.master] != lm.master:
			p.markDirty(vni, touched, "link "+e.name+" changed")
		}
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		e, ok := parseNeighEvent(m)
		if !ok || e.family != unix.AF_BRIDGE {
			return
		}
		name := p.ifnames[e.index]
		vni, kind, ours := ownedLink(name)
		if !ours || p.known[vni] == nil {
			return
		}
		model := p.known[vni].model
		switch kind {
		case kindVXLAN:
			if !e.dst.IsValid() || e.flags&unix.NTF_SELF == 0 {
				return // learned by the bridge
			}
			entry := fdbEntry{mac: e.mac, dst: e.dst}
			if e.deleted == model.fdb[entry] {
				p.markDirty(vni, touched, "FDB entry "+e.mac+" dst "+e.dst.String()+" on "+name)
			}
		case kindRouter:
			if e.mac != GatewayMAC(vni).String() {
				return
			}
			if e.deleted || !gatewayPinned(e.state, e.flags) {
				p.markDirty(vni, touched, "gateway FDB entry on "+name)
			}
		}
	}
}

// linkNetwork finds the known network a host link belongs to.
func (p *Linux) linkNetwork(name string) (uint32, bool) {
	vni, kind, ours := ownedLink(name)
	if !ours {
		return 0, false
	}
	if kind == kindPort {
		vni, ours = p.portNet[name]
	}
	return vni, ours && p.known[vni] != nil
}

func (p *Linux) routerEvent(vni uint32, m *syscall.NetlinkMessage, touched map[uint32]bool) {
	r, k := p.routers[vni], p.known[vni]
	if r == nil || k == nil {
		return
	}
	rm := k.model.router
	switch m.Header.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		e, ok := parseLinkEvent(m)
		if !ok {
			return
		}
		if e.deleted {
			delete(r.ifnames, e.index)
		} else {
			r.ifnames[e.index] = e.name
		}
		lm, ok := rm.links[e.name]
		if !ok {
			return
		}
		checkMAC := e.name == internalLink || e.name == externalLink
		if e.deleted || lm.mtu != 0 && e.mtu != lm.mtu || e.up != lm.up || checkMAC && e.mac != lm.mac {
			p.markDirty(vni, touched, "router link "+e.name+" changed")
		}
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if len(m.Data) < unix.SizeofIfAddrmsg {
			return
		}
		ifa := (*unix.IfAddrmsg)(unsafe.Pointer(&m.Data[0]))
		var ip []byte
		for _, a := range parseAttrs(m.Data[unix.SizeofIfAddrmsg:]) {
			if a.typ == unix.IFA_LOCAL || a.typ == unix.IFA_ADDRESS && ip == nil {
				ip = a.value
			}
		}
		bits := 32
		if ifa.Family == unix.AF_INET6 {
			bits = 128
		}
		key, ok := routerAddrKey(r.ifnames[int(ifa.Index)], &net.IPNet{IP: ip, Mask: net.CIDRMask(int(ifa.Prefixlen), bits)})
		if !ok {
			return
		}
		if (m.Header.Type == unix.RTM_DELADDR) == rm.addrs[key] {
			p.markDirty(vni, touched, "router address "+key.prefix+" changed")
		}
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		if len(m.Data) < unix.SizeofRtMsg {
			return
		}
		rtm := (*unix.RtMsg)(unsafe.Pointer(&m.Data[0]))
		table := int(rtm.Table)
		var gw []byte
		oif := 0
		for _, a := range parseAttrs(m.Data[unix.SizeofRtMsg:]) {
			switch a.typ {
			case unix.RTA_TABLE:
				if len(a.value) >= 4 {
					table = int(*(*uint32)(unsafe.Pointer(&a.value[0])))
				}
			case unix.RTA_GATEWAY:
				gw = a.value
			case unix.RTA_OIF:
				if len(a.value) >= 4 {
					oif = int(*(*uint32)(unsafe.Pointer(&a.value[0])))
				}
			}
		}
		if rtm.Dst_len != 0 || table != unix.RT_TABLE_MAIN || rtm.Type != unix.RTN_UNICAST {
			return
		}
		key := "0.0.0.0/0"
		if rtm.Family == unix.AF_INET6 {
			key = "::/0"
		}
		value := "dev " + r.ifnames[oif]
		if a, ok := netip.AddrFromSlice(gw); ok {
			value = routeValue(a.Unmap(), r.ifnames[oif])
		}
		want, ok := rm.routes[key]
		if m.Header.Type == unix.RTM_DELROUTE && ok && want == value || m.Header.Type == unix.RTM_NEWROUTE && want != value {
			p.markDirty(vni, touched, "router route "+key+" changed")
		}
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		e, ok := parseNeighEvent(m)
		// A deleted entry is reported in the state it was left in
		// (failed), so only additions are told apart by state.
		if !ok || !e.dst.IsValid() || !e.deleted && e.state&unix.NUD_PERMANENT == 0 {
			return
		}
		key := addrKey{r.ifnames[e.index], e.dst.String()}
		mac, known := rm.neigh[key]
		if e.deleted && known || !e.deleted && mac != e.mac {
			p.markDirty(vni, touched, "router neighbour "+e.dst.String()+" changed")
		}
	}
}

func (p *Linux) nftEvent(s *eventSock, m *syscall.NetlinkMessage, touched map[uint32]bool) {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
		return
	}
	msg := m.Header.Type & 0xff
	attrs := parseAttrs(m.Data[4:])
	// Attribute 1 names the table in every kind of nftables message that
	// has one (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
	// NFTA_SET_ELEM_LIST_TABLE, …).
	table := ""
	for _, a := range attrs {
		if a.typ == 1 {
			table = cString(a.value)
		}
	}
	if msg == unix.NFT_MSG_NEWGEN || table == "" {
		return
	}
	if s.router != 0 {
		if table == routerTable {
			p.markDirty(s.router, touched, "nftables table "+routerTable+" changed")
		}
		return
	}
	if table == sgTable {
		if !touched[0] && !p.sgDirty {
			p.sgDirty = true
			p.logf("dataplane: nftables table %s changed behind the Plane's back", sgTable)
			p.signal()
		}
		return
	}
	if table != hostTable {
		return
	}
	// Which network: the chain a rule or chain message names, or the
	// device a map element is for.
	chain := ""
	switch msg {
	case unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE:
		chain = attrString(attrs, unix.NFTA_RULE_CHAIN)
	case unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN:
		chain = attrString(attrs, unix.NFTA_CHAIN_NAME)
	case unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
		for _, dev := range setElemKeys(attrs) {
			if vni, kind, ok := ownedLink(dev); ok && kind == kindVXLAN {
				p.markDirty(vni, touched, "nftables map element for "+dev+" changed")
			} else if vni, ok := p.portNet[dev]; ok && kind == kindPort {
				p.markDirty(vni, touched, "nftables map element for port "+dev+" changed")
			}
		}
		return
	}
	if vni, ok := netChainVNI(chain); ok {
		p.markDirty(vni, touched, "nftables chain "+chain+" changed")
		return
	}
	if !touched[0] && !p.hostDirty {
		p.hostDirty = true
		p.logf("dataplane: nftables table %s changed behind the Plane's back", hostTable)
		p.signal()
	}
}

func attrString(attrs []attr, typ uint16) string {
	for _, a := range attrs {
		if a.typ == typ {
			return cString(a.value)
		}
	}
	return ""
}

// setElemKeys returns the keys of the elements of a set element message
// (NFTA_SET_ELEM_LIST_ELEMENTS → NFTA_LIST_ELEM → NFTA_SET_ELEM_KEY →
// NFTA_DATA_VALUE).
func setElemKeys(attrs []attr) []string {
	var keys []string
	for _, a := range attrs {
		if a.typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		for _, el := range parseAttrs(a.value) {
			for _, k := range parseAttrs(el.value) {
				if k.typ != unix.NFTA_SET_ELEM_KEY {
					continue
				}
				for _, v := range parseAttrs(k.value) {
					if v.typ == unix.NFTA_DATA_VALUE {
						keys = append(keys, cString(v.value))
					}
				}
			}
		}
	}
	return keys
}

type attr struct {
	typ   uint16
	value []byte
}

// parseAttrs splits netlink attributes (type-length-value, 4-byte
// aligned).
func parseAttrs(b []byte) []attr {
	var out []attr
	for len(b) >= 4 {
		l := int(*(*uint16)(unsafe.Pointer(&b[0])))
		t := *(*uint16)(unsafe.Pointer(&b[2])) & 0x3fff // without the nested and byte-order flags
		if l < 4 || l > len(b) {
			break
		}
		out = append(out, attr{typ: t, value: b[4:l]})
		aligned := (l + 3) &^ 3
		if aligned > len(b) {
			break
		}
		b = b[aligned:]
	}
	return out
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
