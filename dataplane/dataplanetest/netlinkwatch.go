package dataplanetest

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"hearth.dev/hearth/netns"
)

// Watch counts the netlink notifications of a namespace: links,
// neighbours and FDB entries, addresses, routes, and nftables changes.
// It is how a test shows that an Apply changed nothing.
type Watch struct {
	mu   sync.Mutex
	fds  []int
	msgs []string
	done chan struct{}
	wg   sync.WaitGroup
}

// Watch starts counting in the namespace.
func (n *Namespace) Watch() (*Watch, error) {
	return WatchPath(n.Path())
}

// WatchPath starts counting in the namespace at path.
func WatchPath(path string) (*Watch, error) {
	w := &Watch{done: make(chan struct{})}
	err := netns.DoPath(path, func() error {
		for _, s := range []struct {
			proto  int
			groups uint32
		}{
			{unix.NETLINK_ROUTE, unix.RTMGRP_LINK | unix.RTMGRP_NEIGH | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE},
			{unix.NETLINK_NETFILTER, 1 << (unix.NFNLGRP_NFTABLES - 1)},
		} {
			fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, s.proto)
			if err != nil {
				return err
			}
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
			tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: s.groups}); err != nil {
				unix.Close(fd)
				return err
			}
			w.fds = append(w.fds, fd)
		}
		return nil
	})
	if err != nil {
		w.close()
		return nil, fmt.Errorf("watching %s: %w", path, err)
	}
	for _, fd := range w.fds {
		w.wg.Add(1)
		go w.read(fd)
	}
	return w, nil
}

func (w *Watch) read(fd int) {
	defer w.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-w.done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			w.mu.Lock()
			w.msgs = append(w.msgs, "error: "+err.Error())
			w.mu.Unlock()
			continue
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		w.mu.Lock()
		for _, m := range msgs {
			if !kernelOwn(m) {
				w.msgs = append(w.msgs, describe(m))
			}
		}
		w.mu.Unlock()
	}
}

// Stop ends the watch and returns a line per notification seen. Give the
// kernel a moment first (Settle) when the changes may still be coming.
func (w *Watch) Stop() []string {
	close(w.done)
	w.wg.Wait()
	w.close()
	return w.msgs
}

// Settle waits until no notification came for quiet.
func (w *Watch) Settle(quiet time.Duration) {
	last, since := -1, time.Now()
	for {
		w.mu.Lock()
		n := len(w.msgs)
		w.mu.Unlock()
		if n != last {
			last, since = n, time.Now()
		}
		if time.Since(since) >= quiet {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *Watch) close() {
	for _, fd := range w.fds {
		unix.Close(fd)
	}
	w.fds = nil
}

// kernelOwn tells the notifications the kernel makes by itself, which no
// Plane caused: neighbour entries it learns or ages (ARP, bridge
// learning). A Plane makes only permanent and static entries.
func kernelOwn(m syscall.NetlinkMessage) bool {
	if m.Header.Type != unix.RTM_NEWNEIGH || len(m.Data) < unix.SizeofNdMsg {
		return false
	}
	nd := (*unix.NdMsg)(unsafe.Pointer(&m.Data[0]))
	return nd.State&(unix.NUD_PERMANENT|unix.NUD_NOARP) == 0
}

func describe(m syscall.NetlinkMessage) string {
	names := map[uint16]string{
		unix.RTM_NEWLINK: "NEWLINK", unix.RTM_DELLINK: "DELLINK", unix.RTM_NEWADDR: "NEWADDR", unix.RTM_DELADDR: "DELADDR",
		unix.RTM_NEWROUTE: "NEWROUTE", unix.RTM_DELROUTE: "DELROUTE", unix.RTM_NEWNEIGH: "NEWNEIGH", unix.RTM_DELNEIGH: "DELNEIGH",
	}
	if m.Header.Type>>8 == unix.NFNL_SUBSYS_NFTABLES {
		return fmt.Sprintf("nftables message %d", m.Header.Type&0xff)
	}
	if s, ok := names[m.Header.Type]; ok {
		return fmt.Sprintf("%s (%d bytes)", s, len(m.Data))
	}
	return fmt.Sprintf("rtnetlink message %d", m.Header.Type)
}
