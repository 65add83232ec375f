package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/storage/lab"
)

// Shared storage (Config.SharedStorage, `sandbox up --shared-storage`): a
// namespace PREFIX-storage with one veth on the underlay bridge
// (storageLink, .8 of the underlay; its peer in PREFIX-underlay is
// storagePortName), holding a single-node Ceph cluster (monitor, manager,
// one memstore OSD; pool CephPool of size 1) and an NFS server (Ganesha
// with rpcbind, exporting DIR/storage/nfs/export), both started by
// storage/lab, the way the tests' harnesses start theirs. The hosts reach
// both over the underlay, as hosts reach a real Ceph cluster or NAS; the
// StoragePools PoolCeph and PoolNFS say so to the API, the Ceph user's key
// in the Secret CephKeySecret.
//
// PREFIX-storage does not forward and has no other link: like the rest
// of the sandbox it never reaches the machine's real networks. Down stops
// the servers with everything else inside the sandbox's namespaces; the
// OSD keeps its data in memory and Ganesha its state in tmpfs mounts of a
// mount namespace of its own, so nothing outlives them but DIR/storage,
// which Down removes.
const (
	// PoolCeph and PoolNFS are the StoragePools of the shared storage.
	PoolCeph = "ceph"
	PoolNFS  = "nfs"
	// CephKeySecret holds the Ceph user's key (key "key").
	CephKeySecret = "ceph-keyring"
	// CephPool is the Ceph pool, CephUser the cephx user (with the rbd
	// profile on that pool only) Hearth uses.
	CephPool = "hearth"
	CephUser = "hearth"

	storageLink     = "underlay"
	storagePortName = "storage"
	storageSubdir   = "storage"
	storageOffset   = 8
	// cephStartTimeout bounds the Ceph cluster's start (about 15–30 s
	// here; more on a loaded machine).
	cephStartTimeout = 4 * time.Minute
	// osdBytes is the OSD's memstore: the sandbox's RBD volumes are held
	// in memory, thin, so this bounds what guests write, not their sizes.
	osdBytes = 4 << 30
)

// Storage is the sandbox's shared storage.
type Storage struct {
	// Netns holds Link, a veth on the underlay bridge with Address, and
	// the servers' processes.
	Netns   string `json:"netns"`
	Link    string `json:"link"`
	Address string `json:"address"`
	// Dir holds the Ceph cluster's files (Dir/ceph) and the NFS server's
	// (Dir/nfs).
	Dir  string       `json:"dir"`
	Ceph *StorageCeph `json:"ceph,omitempty"`
	NFS  *StorageNFS  `json:"nfs,omitempty"`
	// Pools are the StoragePools made ("" until made).
	Pools []string `json:"pools,omitempty"`
}

// StorageCeph is the sandbox's Ceph cluster.
type StorageCeph struct {
	FSID     string    `json:"fsid"`
	Monitors []string  `json:"monitors"`
	Pool     string    `json:"pool"`
	Conf     string    `json:"conf"`
	Daemons  []Process `json:"daemons"`
}

// StorageNFS is the sandbox's NFS server.
type StorageNFS struct {
	Server  string  `json:"server"`
	Export  string  `json:"export"`
	Dir     string  `json:"dir"`
	Process Process `json:"process"`
}

// buildStorage makes PREFIX-storage with its veth on the underlay.
func (s *Sandbox) buildStorage(under netns.Handle, uh *netlink.Handle) error {
	addr := addrAt(s.cfg.Underlay, storageOffset)
	st := &Storage{Netns: s.names.storage(), Link: storageLink, Address: addr.String(),
		Dir: filepath.Join(s.cfg.Dir, storageSubdir)}
	s.State.Storage = st
	if err := s.State.save(); err != nil {
		return err
	}
	sns, err := s.newNetns(st.Netns)
	if err != nil {
		return err
	}
	defer sns.Close()
	sh, err := netlink.NewHandleAt(sns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", st.Netns, err)
	}
	defer sh.Close()
	if err := linkUp(sh, "lo"); err != nil {
		return fmt.Errorf("%s: %w", st.Netns, err)
	}
	if err := netns.DoNamed(st.Netns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644)
	}); err != nil {
		return fmt.Errorf("turning forwarding off in %s: %w", st.Netns, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: storageLink, Namespace: netlink.NsFd(sns)},
		PeerName:      storagePortName,
		PeerNamespace: netlink.NsFd(under),
	}
	if err := sh.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s (%s) – %s (%s): %w", storageLink, st.Netns, storagePortName, s.names.underlay(), err)
	}
	if err := plugIntoBridge(uh, storagePortName, bridgeName); err != nil {
		return err
	}
	return addressUp(sh, st.Netns, storageLink, netip.PrefixFrom(addr, s.cfg.Underlay.Bits()))
}

// storageStart is the shared storage's servers starting in the
// background: Ceph takes tens of seconds, which the agents' start and the
// test guest's build overlap.
type storageStart struct {
	done chan struct{}
	ceph *lab.Ceph
	nfs  *lab.NFS
	err  error
}

// StartStorage starts the Ceph cluster and the NFS server in
// PREFIX-storage, in the background; MakeStoragePools waits for them.
func (s *Sandbox) StartStorage(ctx context.Context) error {
	st := s.State.Storage
	if st == nil {
		return errors.New("the storage namespace is not built")
	}
	cephDir, nfsDir := filepath.Join(st.Dir, "ceph"), filepath.Join(st.Dir, "nfs")
	for _, d := range []string{cephDir, nfsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := s.addPath(st.Dir); err != nil {
		return err
	}
	// Tools are checked now, so a missing package fails the step that
	// names it rather than a wait later.
	if tool, pkg := lab.MissingCephTool(); tool != "" {
		return fmt.Errorf("--shared-storage needs Ceph: %s not found: install Debian's %s", tool, pkg)
	}
	if tool, pkg := lab.MissingNFSTool(); tool != "" {
		return fmt.Errorf("--shared-storage needs an NFS server: %s not found: install Debian's %s", tool, pkg)
	}
	start := &storageStart{done: make(chan struct{})}
	s.storage = start
	go func() {
		defer close(start.done)
		start.nfs, start.err = lab.StartNFS(ctx, lab.NFSOptions{Dir: nfsDir, Netns: st.Netns, Address: st.Address})
		if start.err != nil {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, cephStartTimeout)
		defer cancel()
		start.ceph, start.err = lab.StartCeph(cctx, lab.CephOptions{Dir: cephDir, Netns: st.Netns, Address: st.Address,
			Pool: CephPool, OSDBytes: osdBytes})
	}()
	return nil
}

// MakeStoragePools waits for the servers StartStorage started, records
// them, and makes the StoragePools PoolCeph and PoolNFS, with the Ceph
// user's key in the Secret CephKeySecret.
func (s *Sandbox) MakeStoragePools(ctx context.Context) error {
	start, st := s.storage, s.State.Storage
	if start == nil || st == nil {
		return errors.New("the shared storage was not started")
	}
	select {
	case <-start.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if n := start.nfs; n != nil {
		st.NFS = &StorageNFS{Server: n.Host, Export: n.Path, Dir: n.Export,
			Process: Process{PID: n.Process.PID, StartTime: n.Process.Start, Log: filepath.Join(n.Dir, "log", "ganesha.log")}}
	}
	if c := start.ceph; c != nil {
		sc := &StorageCeph{FSID: c.FSID, Monitors: c.Monitors, Pool: c.Pool, Conf: c.Conf}
		for _, d := range c.Daemons {
			sc.Daemons = append(sc.Daemons, Process{PID: d.PID, StartTime: d.Start, Log: filepath.Join(c.Dir, "log")})
		}
		st.Ceph = sc
	}
	if err := s.State.save(); err != nil {
		return err
	}
	if start.err != nil {
		return start.err
	}
	key, err := start.ceph.AddUser(ctx, CephUser, CephPool)
	if err != nil {
		return err
	}
	c, err := s.Client()
	if err != nil {
		return err
	}
	tm := func(kind string) api.TypeMeta { return api.TypeMeta{APIVersion: api.APIVersion, Kind: kind} }
	labels := map[string]string{"hearth.dev/sandbox": "shared-storage"}
	objs := []api.Object{
		&api.Secret{TypeMeta: tm("Secret"), Metadata: api.ObjectMeta{Name: CephKeySecret, Labels: labels},
			Spec: api.SecretSpec{StringData: map[string]string{"key": key}}},
		&api.StoragePool{TypeMeta: tm("StoragePool"), Metadata: api.ObjectMeta{Name: PoolCeph, Labels: labels},
			Spec: api.StoragePoolSpec{Description: "the sandbox's single-node Ceph cluster (" + st.Netns + ")", Driver: api.PoolDriverRBD,
				RBD: &api.RBDPoolSpec{Monitors: start.ceph.Monitors, Pool: CephPool, User: CephUser,
					KeyringSecret: &api.SecretKeyRef{Name: CephKeySecret, Key: "key"}}}},
		&api.StoragePool{TypeMeta: tm("StoragePool"), Metadata: api.ObjectMeta{Name: PoolNFS, Labels: labels},
			Spec: api.StoragePoolSpec{Description: "the sandbox's NFS server (" + st.Netns + ")", Driver: api.PoolDriverNFS,
				NFS: &api.NFSPoolSpec{Server: start.nfs.Host, Export: start.nfs.Path}}},
	}
	for _, o := range objs {
		if err := createOrReplace(ctx, c, o); err != nil {
			return err
		}
	}
	st.Pools = []string{PoolCeph, PoolNFS}
	return s.State.save()
}

// createOrReplace creates o, or updates the object of its name to o's
// spec.
func createOrReplace(ctx context.Context, c *client.Client, o api.Object) error {
	m := o.GetMetadata()
	cur, err := c.Get(ctx, o.GetTypeMeta().Kind, "", m.Name)
	if api.IsNotFound(err) {
		if _, err := c.Create(ctx, o); err != nil {
			return fmt.Errorf("making %s %s: %w", o.GetTypeMeta().Kind, m.Name, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	m.ResourceVersion = cur.GetMetadata().ResourceVersion
	if _, err := c.Update(ctx, o); err != nil {
		return fmt.Errorf("updating %s %s: %w", o.GetTypeMeta().Kind, m.Name, err)
	}
	return nil
}

// storageStatus says where the shared storage's servers are and whether
// they run.
func storageStatus(st *Storage) (ceph, nfs string) {
	ceph, nfs = "not started", "not started"
	if c := st.Ceph; c != nil {
		up := len(c.Daemons) > 0
		for _, d := range c.Daemons {
			if !d.alive() {
				up = false
			}
		}
		state := "not running (a daemon exited)"
		if up {
			state = "running"
		}
		ceph = fmt.Sprintf("monitor %s, pool %s, %s, conf %s", c.Monitors[0], c.Pool, state, c.Conf)
	}
	if n := st.NFS; n != nil {
		nfs = fmt.Sprintf("nfs://%s%s (%s), %s, log %s", n.Server, n.Export, n.Dir, running(&n.Process), n.Process.Log)
	}
	return ceph, nfs
}
