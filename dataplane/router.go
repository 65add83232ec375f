package dataplane

import (
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// routerNS is a network's router namespace as the Plane holds it: a
// handle, netlink and nftables sockets inside it, and its event sockets.
type routerNS struct {
	vni     uint32
	name    string
	ns      netns.Handle
	nl      *netlink.Handle
	nft     *nftables.Conn
	events  []*eventSock
	ifnames map[int]string
}

func (r *routerNS) close() {
	for _, s := range r.events {
		s.close()
	}
	r.events = nil
	if r.nl != nil {
		r.nl.Close()
	}
	if r.nft != nil {
		r.nft.CloseLasting()
	}
	if r.ns.IsOpen() {
		r.ns.Close()
	}
}

// router returns the router namespace of a network if it exists under
// its name (opening it if the Plane has no handle yet), or nil. A handle
// whose namespace is no longer the one under the name (deleted, or
// replaced by hand) is dropped.
func (p *Linux) router(vni uint32) (*routerNS, error) {
	name := routerNetns(p.cfg.NetnsPrefix, vni)
	r := p.routers[vni]
	var st unix.Stat_t
	if err := unix.Stat(netns.Path(name), &st); err != nil {
		if r != nil {
			p.dropRouter(vni)
		}
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("router namespace %s: %w", name, err)
	}
	if r != nil {
		var held unix.Stat_t
		if err := unix.Fstat(int(r.ns), &held); err == nil && held.Dev == st.Dev && held.Ino == st.Ino {
			return r, nil
		}
		p.dropRouter(vni)
	}
	ns, err := netns.Open(name)
	if err != nil {
		// A file that is not a namespace (its bind mount gone): take the
		// name back.
		os.Remove(netns.Path(name))
		return nil, nil
	}
	return p.adoptRouter(vni, name, ns)
}

// createRouter makes a network's router namespace.
func (p *Linux) createRouter(vni uint32) (*routerNS, error) {
	name := routerNetns(p.cfg.NetnsPrefix, vni)
	ns, err := netns.Create(name)
	if err != nil {
		return nil, err
	}
	p.logf("dataplane: created router namespace %s", name)
	return p.adoptRouter(vni, name, ns)
}

func (p *Linux) adoptRouter(vni uint32, name string, ns netns.Handle) (*routerNS, error) {
	r := &routerNS{vni: vni, name: name, ns: ns, ifnames: map[int]string{}}
	err := netns.Do(ns, func() error {
		var err error
		if r.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return err
		}
		if r.nft, err = nftables.New(nftables.AsLasting()); err != nil {
			return err
		}
		r.events, err = routerEventSocks(vni)
		return err
	})
	if err != nil {
		r.close()
		return nil, fmt.Errorf("router namespace %s: %w", name, err)
	}
	p.routers[vni] = r
	if p.watch != nil {
		p.watch.add(r.events...)
	}
	return r, nil
}

// dropRouter closes the Plane's handles on a router namespace.
func (p *Linux) dropRouter(vni uint32) {
	r := p.routers[vni]
	if r == nil {
		return
	}
	if p.watch != nil {
		p.watch.remove(r.events...)
	}
	r.close()
	delete(p.routers, vni)
}

// deleteRouter closes and deletes a network's router namespace. Its
// links go with it once nothing else holds it (a service still running in
// it keeps it alive: the agent stops those first).
func (p *Linux) deleteRouter(vni uint32) error {
	p.dropRouter(vni)
	name := routerNetns(p.cfg.NetnsPrefix, vni)
	if err := netns.Delete(name); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	p.logf("dataplane: deleted router namespace %s", name)
	return nil
}
