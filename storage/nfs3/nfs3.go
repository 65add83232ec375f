// Package nfs3 is a small NFS version 3 client (RFC 1813, over ONC RPC,
// RFC 5531, on TCP): just the calls the nfs storage driver needs beside
// what QEMU and qemu-img do themselves through libnfs — look a name up,
// link, remove, and ask a share how full it is.
//
// Hosts reach a share without mounting it (this kernel may have no NFS
// client at all, and a hung mount would hang the agent), so these few
// operations are done here, in userspace, as libnfs does the rest.
//
// A Client is one mounted export over one TCP connection. It is safe for
// concurrent use; calls are made one at a time.
package nfs3

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ONC RPC programs and the procedures used here.
const (
	progPortmap = 100000
	progMount   = 100005
	progNFS     = 100003

	pmapGetPort = 3
	mountMnt    = 1
	mountUmnt   = 3
	nfsLookup   = 3
	nfsRemove   = 12
	nfsLink     = 15
	nfsFSStat   = 18
)

// Client is a connection to one export of an NFS server.
type Client struct {
	server, export string
	mountPort      int
	root           []byte // the export's file handle

	mu  sync.Mutex
	nfs *rpcConn
}

// Timeout bounds each call and each connection attempt.
var Timeout = 30 * time.Second

// Dial mounts export (its path, as the server exports it) of server (a
// host name or address) and returns a client for it. It finds the mount
// and NFS services through the server's portmapper (port 111), as every
// NFSv3 client does. As root it connects from a reserved port (below 1024),
// which servers that export with "secure" (the kernel's default) require.
func Dial(server, export string) (*Client, error) {
	pm, err := dialRPC(server, 111)
	if err != nil {
		return nil, fmt.Errorf("nfs %s: portmapper: %w", server, err)
	}
	mountPort, err := pm.getPort(progMount, 3)
	if err != nil {
		pm.close()
		return nil, fmt.Errorf("nfs %s: mount service: %w", server, err)
	}
	nfsPort, err := pm.getPort(progNFS, 3)
	pm.close()
	if err != nil {
		return nil, fmt.Errorf("nfs %s: nfs service: %w", server, err)
	}
	m, err := dialRPC(server, mountPort)
	if err != nil {
		return nil, fmt.Errorf("nfs %s: mount service: %w", server, err)
	}
	defer m.close()
	var args xdrWriter
	args.string(export)
	res, err := m.call(progMount, 3, mountMnt, args.b)
	if err != nil {
		return nil, fmt.Errorf("nfs %s:%s: mount: %w", server, export, err)
	}
	r := xdrReader{b: res}
	if st := r.u32(); st != 0 {
		return nil, fmt.Errorf("nfs %s:%s: mount: %w", server, export, statusError(st))
	}
	root := r.opaque()
	if r.err != nil {
		return nil, fmt.Errorf("nfs %s:%s: mount: %w", server, export, r.err)
	}
	nfs, err := dialRPC(server, nfsPort)
	if err != nil {
		return nil, fmt.Errorf("nfs %s: %w", server, err)
	}
	return &Client{server: server, export: export, mountPort: mountPort, root: root, nfs: nfs}, nil
}

// Close unmounts the export (telling the server, which keeps a list of
// its clients' mounts) and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nfs.close()
	m, err := dialRPC(c.server, c.mountPort)
	if err != nil {
		return fmt.Errorf("nfs %s:%s: unmount: %w", c.server, c.export, err)
	}
	defer m.close()
	var args xdrWriter
	args.string(c.export)
	if _, err := m.call(progMount, 3, mountUmnt, args.b); err != nil {
		return fmt.Errorf("nfs %s:%s: unmount: %w", c.server, c.export, err)
	}
	return nil
}

// Stat is a share's size and free space, in bytes.
type Stat struct {
	// Total is the share's size; Free the space not used; Avail the space
	// this client may still use (less than Free when the server keeps a
	// reserve).
	Total, Free, Avail uint64
}

// FSStat asks the server how large and how full the share is.
func (c *Client) FSStat() (Stat, error) {
	var args xdrWriter
	args.opaque(c.root)
	r, err := c.call(nfsFSStat, args.b)
	if err != nil {
		return Stat{}, fmt.Errorf("fsstat %s: %w", c.export, err)
	}
	r.postOpAttr()
	s := Stat{Total: r.u64(), Free: r.u64(), Avail: r.u64()}
	return s, r.err
}

// Lookup returns the file handle of name in the export's top directory;
// an error wrapping fs.ErrNotExist says there is none.
func (c *Client) Lookup(name string) ([]byte, error) {
	var args xdrWriter
	args.opaque(c.root)
	args.string(name)
	r, err := c.call(nfsLookup, args.b)
	if err != nil {
		return nil, fmt.Errorf("lookup %s in %s: %w", name, c.export, err)
	}
	fh := r.opaque()
	return fh, r.err
}

// Link gives the file from a second name, to, in the export's top
// directory. It fails with an error wrapping fs.ErrExist, and changes
// nothing, if to exists: unlike a rename, it never replaces a file.
func (c *Client) Link(from, to string) error {
	fh, err := c.Lookup(from)
	if err != nil {
		return err
	}
	var args xdrWriter
	args.opaque(fh)
	args.opaque(c.root)
	args.string(to)
	if _, err := c.call(nfsLink, args.b); err != nil {
		return fmt.Errorf("link %s to %s in %s: %w", from, to, c.export, err)
	}
	return nil
}

// Remove removes name from the export's top directory. A missing name is
// an error wrapping fs.ErrNotExist.
func (c *Client) Remove(name string) error {
	var args xdrWriter
	args.opaque(c.root)
	args.string(name)
	if _, err := c.call(nfsRemove, args.b); err != nil {
		return fmt.Errorf("remove %s from %s: %w", name, c.export, err)
	}
	return nil
}

// call makes an NFS call and returns a reader at its result, past the
// status, which it turns into an error.
func (c *Client) call(proc uint32, args []byte) (*xdrReader, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := c.nfs.call(progNFS, 3, proc, args)
	if err != nil {
		return nil, err
	}
	r := &xdrReader{b: res}
	if st := r.u32(); st != 0 {
		return nil, statusError(st)
	}
	return r, r.err
}

// Error is an NFS or MOUNT status other than OK.
type Error uint32

func (e Error) Error() string {
	switch e {
	case 1:
		return "not owner (NFS3ERR_PERM)"
	case 2:
		return "no such file (NFS3ERR_NOENT)"
	case 13:
		return "permission denied (NFS3ERR_ACCES)"
	case 17:
		return "file exists (NFS3ERR_EXIST)"
	case 28:
		return "no space left on the share (NFS3ERR_NOSPC)"
	case 70:
		return "stale file handle (NFS3ERR_STALE)"
	}
	return "NFS error " + strconv.Itoa(int(e))
}

func (e Error) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return e == 2
	case fs.ErrExist:
		return e == 17
	case fs.ErrPermission:
		return e == 1 || e == 13
	}
	return false
}

func statusError(st uint32) error { return Error(st) }

// rpcConn is one TCP connection to an RPC service.
type rpcConn struct {
	conn net.Conn
	xid  uint32
}

// dialRPC connects to port on server, from a reserved port when root.
func dialRPC(server string, port int) (*rpcConn, error) {
	addr := net.JoinHostPort(server, strconv.Itoa(port))
	if os.Geteuid() == 0 {
		// Walk down the reserved ports, as bindresvport does, past those
		// in use (or whose last connection to addr lingers in TIME_WAIT).
		for p := 1023; p >= 600; p-- {
			d := net.Dialer{Timeout: Timeout, LocalAddr: &net.TCPAddr{Port: p}}
			conn, err := d.Dial("tcp", addr)
			if err == nil {
				return &rpcConn{conn: conn, xid: uint32(time.Now().UnixNano())}, nil
			}
			if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return nil, err
			}
		}
	}
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return nil, err
	}
	return &rpcConn{conn: conn, xid: uint32(time.Now().UnixNano())}, nil
}

func (c *rpcConn) close() { c.conn.Close() }

// getPort asks a portmapper (version 2) for the TCP port of a program.
func (c *rpcConn) getPort(prog, vers uint32) (int, error) {
	var args xdrWriter
	args.u32(prog)
	args.u32(vers)
	args.u32(6) // TCP
	args.u32(0)
	res, err := c.call(progPortmap, 2, pmapGetPort, args.b)
	if err != nil {
		return 0, err
	}
	r := xdrReader{b: res}
	port := r.u32()
	if r.err != nil {
		return 0, r.err
	}
	if port == 0 {
		return 0, fmt.Errorf("program %d version %d is not registered", prog, vers)
	}
	return int(port), nil
}

// maxReply bounds a reply: these calls' replies are a few hundred bytes.
const maxReply = 1 << 20

// call sends a call with AUTH_UNIX credentials (the process's uid and
// gid, as the kernel's client and libnfs send them) and returns the
// procedure's result.
func (c *rpcConn) call(prog, vers, proc uint32, args []byte) ([]byte, error) {
	c.xid++
	xid := c.xid
	var m xdrWriter
	m.u32(0) // record mark, filled in below
	m.u32(xid)
	m.u32(0) // CALL
	m.u32(2) // RPC version
	m.u32(prog)
	m.u32(vers)
	m.u32(proc)
	var cred xdrWriter
	cred.u32(uint32(time.Now().Unix()))
	host, _ := os.Hostname()
	if len(host) > 255 {
		host = host[:255]
	}
	cred.string(host)
	cred.u32(uint32(os.Geteuid()))
	cred.u32(uint32(os.Getegid()))
	cred.u32(0) // no supplementary groups
	m.u32(1)    // AUTH_UNIX
	m.opaque(cred.b)
	m.u32(0) // verifier: AUTH_NONE
	m.u32(0)
	m.b = append(m.b, args...)
	binary.BigEndian.PutUint32(m.b, 0x80000000|uint32(len(m.b)-4))

	c.conn.SetDeadline(time.Now().Add(Timeout))
	if _, err := c.conn.Write(m.b); err != nil {
		return nil, err
	}
	for {
		reply, err := readRecord(c.conn)
		if err != nil {
			return nil, err
		}
		r := xdrReader{b: reply}
		if r.u32() != xid {
			continue // a late reply to an earlier call that timed out
		}
		if r.u32() != 1 {
			return nil, errors.New("rpc: reply is not a REPLY")
		}
		if st := r.u32(); st != 0 { // MSG_DENIED
			if r.u32() == 1 {
				return nil, fmt.Errorf("rpc: authentication refused (auth_stat %d)", r.u32())
			}
			return nil, errors.New("rpc: version mismatch")
		}
		r.u32()    // verifier flavor
		r.opaque() // verifier body
		switch st := r.u32(); st {
		case 0:
		case 1:
			return nil, fmt.Errorf("rpc: program %d unavailable", prog)
		case 2:
			return nil, fmt.Errorf("rpc: program %d version %d unavailable", prog, vers)
		case 3:
			return nil, fmt.Errorf("rpc: procedure %d of program %d unavailable", proc, prog)
		default:
			return nil, fmt.Errorf("rpc: call failed (accept_stat %d)", st)
		}
		if r.err != nil {
			return nil, r.err
		}
		return r.b[r.off:], nil
	}
}

// readRecord reads one record: fragments up to the one marked last.
func readRecord(rd io.Reader) ([]byte, error) {
	var rec []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(rd, hdr[:]); err != nil {
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h & 0x7fffffff)
		if len(rec)+n > maxReply {
			return nil, fmt.Errorf("rpc: reply of more than %d bytes", maxReply)
		}
		frag := make([]byte, n)
		if _, err := io.ReadFull(rd, frag); err != nil {
			return nil, err
		}
		rec = append(rec, frag...)
		if h&0x80000000 != 0 {
			return rec, nil
		}
	}
}

// xdrWriter appends XDR (RFC 4506) values.
type xdrWriter struct{ b []byte }

func (w *xdrWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }

func (w *xdrWriter) opaque(p []byte) {
	w.u32(uint32(len(p)))
	w.b = append(w.b, p...)
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}

func (w *xdrWriter) string(s string) { w.opaque([]byte(s)) }

// xdrReader reads XDR values; the first error sticks and later reads
// return zero.
type xdrReader struct {
	b   []byte
	off int
	err error
}

func (r *xdrReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || r.off+n > len(r.b) {
		r.err = errors.New("xdr: reply too short")
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *xdrReader) u32() uint32 {
	p := r.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (r *xdrReader) u64() uint64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (r *xdrReader) opaque() []byte {
	n := r.u32()
	if n > 1<<16 {
		r.err = fmt.Errorf("xdr: opaque of %d bytes", n)
		return nil
	}
	p := r.take(int(n))
	r.take((4 - int(n)%4) % 4)
	return append([]byte(nil), p...)
}

// postOpAttr skips a post_op_attr: a flag and, if set, a fattr3 (84 bytes).
func (r *xdrReader) postOpAttr() {
	if r.u32() != 0 {
		r.take(84)
	}
}
