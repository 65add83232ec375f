package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/storage"
)

// Volumes that name a StoragePool (spec.pool) are kept by the pool's
// storage.Driver, under the volume's uid, never a name the tenant chose:
//
//	local  DIR/volumes/<uid>.<format>, DIR the pool's spec.local.path or
//	       DATA-DIR/pools/<pool> (files on the volume's host, as without a pool)
//	rbd    <ceph pool>/hearth-vol-<uid>, a clone of the pool's import of the image
//	nfs    <export>/hearth-vol-<uid>.qcow2, backed by the share's copy of the image
//
// A host reaches every pool itself: it reads the pool from its cache and
// the Secret holding an rbd pool's key from the API (the one kind of
// Secret a host may read), and the driver writes the key, mode 0600, into
// DATA-DIR/pools/<pool>/, where the rbd program and QEMU read it: the key
// is never on a command line, in a log or in a status.

// poolDrivers makes and keeps the driver of each pool the host uses.
type poolDrivers struct {
	a *Agent

	mu      sync.Mutex
	drivers map[string]poolDriver // pool name → its driver
	// usageKick asks reportUsage to read the pools now: a pool changed,
	// or the host began to use one (poolusage.go).
	usageKick chan struct{}
}

// poolDriver is a pool's driver and the version of the pool it was made
// from: a changed pool (new monitors, a new keyringSecret) gets a new one.
type poolDriver struct {
	version string
	d       storage.Driver
}

func newPoolDrivers(a *Agent) *poolDrivers {
	return &poolDrivers{a: a, drivers: map[string]poolDriver{}, usageKick: make(chan struct{}, 1)}
}

// pool returns a StoragePool from the cache, or a wait error that says
// it is missing (the volume waits for an administrator to make it).
func (p *poolDrivers) pool(name string) (*api.StoragePool, error) {
	o, ok := p.a.cache.pools.Get(name)
	if !ok || o.GetMetadata().DeletionTimestamp != nil {
		return nil, waiting("storage pool %s does not exist (a cluster admin makes it)", name)
	}
	return o.(*api.StoragePool), nil
}

// forVolume returns the driver that keeps vol, which names a pool.
func (p *poolDrivers) forVolume(ctx context.Context, vol *api.Volume) (storage.Driver, error) {
	pool, err := p.pool(vol.Spec.Pool)
	if err != nil {
		return nil, err
	}
	if pool.Spec.Driver == api.PoolDriverLocal {
		// Stateless, and its format is the volume's: made per call.
		dir := filepath.Join(p.a.cfg.DataDir, "pools", pool.Metadata.Name)
		if pool.Spec.Local != nil && pool.Spec.Local.Path != "" {
			dir = pool.Spec.Local.Path
		}
		return &storage.Local{Dir: dir, Format: volumeFormat(vol)}, nil
	}
	return p.driver(ctx, pool)
}

// driver returns the driver of a shared pool, making it on first use and
// again when the pool changed.
func (p *poolDrivers) driver(ctx context.Context, pool *api.StoragePool) (storage.Driver, error) {
	name := pool.Metadata.Name
	p.mu.Lock()
	have, ok := p.drivers[name]
	p.mu.Unlock()
	if ok && have.version == pool.Metadata.ResourceVersion {
		return have.d, nil
	}
	var d storage.Driver
	var err error
	switch s := pool.Spec; s.Driver {
	case api.PoolDriverRBD:
		if s.RBD == nil {
			return nil, fmt.Errorf("storage pool %s: driver rbd without its rbd settings", name)
		}
		cfg := storage.RBDConfig{Pool: s.RBD.Pool, Monitors: s.RBD.Monitors, User: s.RBD.User,
			Dir: filepath.Join(p.a.cfg.DataDir, "pools", name)}
		if ref := s.RBD.KeyringSecret; ref != nil {
			if cfg.Key, err = p.key(ctx, name, ref, s.RBD.User); err != nil {
				return nil, err
			}
		}
		d, err = storage.NewRBD(cfg)
	case api.PoolDriverNFS:
		if s.NFS == nil {
			return nil, fmt.Errorf("storage pool %s: driver nfs without its nfs settings", name)
		}
		d, err = storage.NewNFS(storage.NFSConfig{Server: s.NFS.Server, Export: s.NFS.Export})
	default:
		return nil, fmt.Errorf("storage pool %s: driver %q is not one this host knows", name, s.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: %w", name, err)
	}
	p.mu.Lock()
	_, had := p.drivers[name]
	p.drivers[name] = poolDriver{version: pool.Metadata.ResourceVersion, d: d}
	p.mu.Unlock()
	if !had {
		p.kickUsage()
	}
	return d, nil
}

// key reads an rbd pool's key from its Secret. Errors name the Secret and
// its key, never what it holds.
func (p *poolDrivers) key(ctx context.Context, pool string, ref *api.SecretKeyRef, user string) (string, error) {
	o, err := p.a.c.Get(ctx, "Secret", "", ref.Name)
	if api.IsNotFound(err) {
		return "", waiting("storage pool %s: its keyringSecret %s does not exist", pool, ref.Name)
	}
	if err != nil {
		return "", fmt.Errorf("storage pool %s: reading its keyringSecret %s: %w", pool, ref.Name, err)
	}
	v, err := api.SecretValue(o.(*api.Secret), ref.Key)
	if err != nil {
		return "", fmt.Errorf("storage pool %s: keyringSecret: %w", pool, err)
	}
	key, err := storage.ParseCephKey(v, user)
	if err != nil {
		return "", fmt.Errorf("storage pool %s: keyringSecret %s key %s: %w", pool, ref.Name, ref.Key, err)
	}
	return key, nil
}

// poolDisk is how QEMU opens a pool's volume: the file of a local pool's
// volume, or the protocol node and secrets of a shared one.
func poolDisk(att storage.Attachment, disk *compute.Disk) {
	disk.Format = att.Format
	if drv, _ := att.Protocol["driver"].(string); drv == "file" {
		disk.Path, _ = att.Protocol["filename"].(string)
		return
	}
	disk.Path = ""
	disk.Protocol = att.Protocol
	for _, s := range att.Secrets {
		disk.Secrets = append(disk.Secrets, compute.Secret{ID: s.ID, File: s.File})
	}
}

// location is where a pool's volume is, for its status: a file, an RBD
// image (pool/image) or an NFS URL. It holds no secret.
func location(att storage.Attachment) string {
	pr := att.Protocol
	switch pr["driver"] {
	case "file":
		s, _ := pr["filename"].(string)
		return s
	case "rbd":
		return fmt.Sprintf("rbd:%v/%v", pr["pool"], pr["image"])
	case "nfs":
		host := ""
		if srv, ok := pr["server"].(map[string]string); ok {
			host = srv["host"]
		}
		return fmt.Sprintf("nfs://%s%v", host, pr["path"])
	}
	return ""
}
