package v1alpha1

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// StoragePool is a place volumes live: a directory on each host (local),
// a Ceph RBD pool (rbd), or an NFS share (nfs). Volumes on an rbd or nfs
// pool are reachable from every host, so the VMs using them can start on,
// or move to, any host. Only cluster admins write pools; hosts read them,
// and the Secret an rbd pool's key is in, to reach the storage.
type StoragePool = Resource[StoragePoolSpec, StoragePoolStatus]

type StoragePoolSpec struct {
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Driver is local, rbd or nfs; its settings are in the field of the
	// same name (local's are optional).
	Driver string         `json:"driver"`
	Local  *LocalPoolSpec `json:"local,omitempty"`
	RBD    *RBDPoolSpec   `json:"rbd,omitempty"`
	NFS    *NFSPoolSpec   `json:"nfs,omitempty"`
	// Site whose hosts reach the pool; empty means every site's.
	Site string `json:"site,omitempty"`
}

// LocalPoolSpec says where on each host a local pool's files are.
type LocalPoolSpec struct {
	// Path is an absolute directory on every host (default the agent's
	// data directory).
	Path string `json:"path,omitempty"`
}

// RBDPoolSpec says where a Ceph pool is and who Hearth is there.
type RBDPoolSpec struct {
	// Monitors are the Ceph monitors' addresses, host or host:port (port
	// 3300, msgr2, when left out).
	Monitors []string `json:"monitors"`
	// Pool is the Ceph pool's name.
	Pool string `json:"pool"`
	// User is the cephx user, without "client." (default admin). It needs
	// the rbd profile on the pool: `ceph auth get-or-create client.hearth
	// mon 'profile rbd' osd 'profile rbd pool=POOL' mgr 'profile rbd pool=POOL'`.
	User string `json:"user,omitempty"`
	// KeyringSecret names the Secret key that holds the user's key, as
	// `ceph auth get-key` prints it or as a keyring file. Leave it out
	// only for a cluster without cephx.
	KeyringSecret *SecretKeyRef `json:"keyringSecret,omitempty"`
}

// NFSPoolSpec says where an NFS share is. Hosts do not mount it: QEMU
// and Hearth reach it with their own NFSv3 clients, so every host must
// be allowed by the export and name the server the same way.
type NFSPoolSpec struct {
	// Server is the NFS server's host name or IPv4 address.
	Server string `json:"server"`
	// Export is the exported path ("/srv/hearth"). Hearth keeps its files
	// in its top directory.
	Export string `json:"export"`
}

type StoragePoolStatus struct {
	CommonStatus `json:",inline"`
	// Capacity is the pool's size, Used what is written in it, Available
	// what can still be written (for Ceph, after replication).
	Capacity  Bytes `json:"capacity,omitempty"`
	Used      Bytes `json:"used,omitempty"`
	Available Bytes `json:"available,omitempty"`
	// Volumes counts the volumes in the pool.
	Volumes int `json:"volumes,omitempty"`
}

// Storage pool drivers.
const (
	PoolDriverLocal = "local"
	PoolDriverRBD   = "rbd"
	PoolDriverNFS   = "nfs"
)

var (
	cephNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)
	hostNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	exportPathRE = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$|^/$`)
)

func (s *StoragePoolSpec) Default() {
	if s.Driver == PoolDriverRBD && s.RBD != nil && s.RBD.User == "" {
		s.RBD.User = "admin"
	}
}

func (s *StoragePoolSpec) Validate(p string) FieldErrors {
	var es FieldErrors
	if s.Driver == "" {
		es.Add(p+".driver", "is required: local, rbd or nfs")
	} else {
		es = append(es, ValidateOneOf(p+".driver", s.Driver, PoolDriverLocal, PoolDriverRBD, PoolDriverNFS)...)
	}
	// Exactly the driver's settings, so a pool says one thing.
	for _, f := range []struct {
		name string
		set  bool
	}{{PoolDriverLocal, s.Local != nil}, {PoolDriverRBD, s.RBD != nil}, {PoolDriverNFS, s.NFS != nil}} {
		if f.set && f.name != s.Driver {
			es.Add(p+"."+f.name, "is set but driver is %q: give only the settings of the pool's driver", s.Driver)
		}
	}
	if s.Site != "" {
		es = append(es, ValidateName(p+".site", s.Site)...)
	}
	switch s.Driver {
	case PoolDriverLocal:
		if s.Local != nil && s.Local.Path != "" {
			lp := s.Local.Path
			if !path.IsAbs(lp) || path.Clean(lp) != lp || strings.ContainsAny(lp, ",\n\x00") {
				es.Add(p+".local.path", "%q is not an absolute, clean path", lp)
			}
		}
	case PoolDriverRBD:
		if s.RBD == nil {
			es.Add(p+".rbd", "is required for driver rbd (monitors, pool, user, keyringSecret)")
			break
		}
		r := s.RBD
		if len(r.Monitors) == 0 {
			es.Add(p+".rbd.monitors", "is required: at least one monitor address")
		}
		for i, m := range r.Monitors {
			if why := monitorProblem(m); why != "" {
				es.Add(fmt.Sprintf("%s.rbd.monitors[%d]", p, i), "%q %s", m, why)
			}
		}
		if r.Pool == "" {
			es.Add(p+".rbd.pool", "is required: the Ceph pool's name")
		} else if !cephNameRE.MatchString(r.Pool) {
			es.Add(p+".rbd.pool", "%q is not a Ceph pool name (letters, digits, '_', '.', '-')", r.Pool)
		}
		if r.User != "" && !cephNameRE.MatchString(r.User) {
			es.Add(p+".rbd.user", "%q is not a cephx user name (letters, digits, '_', '.', '-'; without \"client.\")", r.User)
		}
		if strings.HasPrefix(r.User, "client.") {
			es.Add(p+".rbd.user", "%q: leave out \"client.\"", r.User)
		}
		if r.KeyringSecret != nil {
			es = append(es, r.KeyringSecret.validate(p+".rbd.keyringSecret")...)
		}
	case PoolDriverNFS:
		if s.NFS == nil {
			es.Add(p+".nfs", "is required for driver nfs (server, export)")
			break
		}
		n := s.NFS
		if n.Server == "" {
			es.Add(p+".nfs.server", "is required: the NFS server's host name or IPv4 address")
		} else if ip := net.ParseIP(n.Server); (ip != nil && ip.To4() == nil) || (ip == nil && !hostNameRE.MatchString(n.Server)) {
			es.Add(p+".nfs.server", "%q is not a host name or IPv4 address", n.Server)
		}
		if n.Export == "" {
			es.Add(p+".nfs.export", "is required: the exported path, such as /srv/hearth")
		} else if !exportPathRE.MatchString(n.Export) || path.Clean(n.Export) != n.Export {
			es.Add(p+".nfs.export", "%q is not an absolute, clean path (letters, digits, '.', '_', '-' between slashes)", n.Export)
		}
	}
	return es
}

// monitorProblem says what is wrong with a monitor address, or "".
func monitorProblem(m string) string {
	host, port := m, ""
	if h, pt, err := net.SplitHostPort(m); err == nil {
		host, port = h, pt
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "has no port from 1 to 65535"
		}
	}
	if net.ParseIP(host) == nil && !hostNameRE.MatchString(host) {
		return "is not a monitor address (host or host:port)"
	}
	return ""
}

func (s *StoragePoolSpec) ValidateUpdate(p string, old any) FieldErrors {
	o := old.(*StoragePoolSpec)
	var es FieldErrors
	if s.Driver != o.Driver {
		es.Add(p+".driver", "cannot change (was %q): the pool's volumes are there", o.Driver)
	}
	if s.RBD != nil && o.RBD != nil && s.RBD.Pool != o.RBD.Pool {
		es.Add(p+".rbd.pool", "cannot change (was %q): the pool's volumes are there", o.RBD.Pool)
	}
	if s.NFS != nil && o.NFS != nil {
		// Clones name their backing file by the server's name: a new name
		// would break them.
		if s.NFS.Server != o.NFS.Server {
			es.Add(p+".nfs.server", "cannot change (was %q): clones refer to their images by it", o.NFS.Server)
		}
		if s.NFS.Export != o.NFS.Export {
			es.Add(p+".nfs.export", "cannot change (was %q): the pool's volumes are there", o.NFS.Export)
		}
	}
	if s.Local != nil && o.Local != nil && s.Local.Path != o.Local.Path {
		es.Add(p+".local.path", "cannot change (was %q): the pool's volumes are there", o.Local.Path)
	}
	return es
}

func init() {
	register[StoragePoolSpec, StoragePoolStatus](KindInfo{
		Kind: "StoragePool", Plural: "storagepools", ShortNames: []string{"storagepool", "pool"}, Scope: ClusterScoped,
		Description: "Where volumes live: a directory on each host (local), a Ceph RBD pool or an NFS share, the last two reachable from every host.",
		Columns: []Column{
			{Name: "DRIVER", Get: func(o Object) string { return o.(*StoragePool).Spec.Driver }},
			{Name: "LOCATION", Get: func(o Object) string {
				s := o.(*StoragePool).Spec
				switch {
				case s.RBD != nil:
					return s.RBD.Pool + "@" + strings.Join(s.RBD.Monitors, ",")
				case s.NFS != nil:
					return s.NFS.Server + ":" + s.NFS.Export
				case s.Local != nil && s.Local.Path != "":
					return s.Local.Path
				}
				return ""
			}},
			{Name: "CAPACITY", Get: func(o Object) string {
				if c := o.(*StoragePool).Status.Capacity; c != 0 {
					return c.String()
				}
				return ""
			}},
			{Name: "USED", Get: func(o Object) string {
				if u := o.(*StoragePool).Status.Used; u != 0 {
					return u.String()
				}
				return ""
			}},
			{Name: "STATUS", Get: func(o Object) string { return o.CommonStatus().Phase }},
			{Name: "SITE", Wide: true, Get: func(o Object) string { return o.(*StoragePool).Spec.Site }},
		},
	})
}

// Shared reports whether every host reaches the pool's volumes.
func (s *StoragePoolSpec) Shared() bool {
	return s.Driver == PoolDriverNFS || s.Driver == PoolDriverRBD
}
