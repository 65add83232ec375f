package store

import (
	"bytes"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Sealer encrypts the stored values of a kind (Secrets), so that etcd, its
// snapshots and its backups never hold them in the clear. key is the
// object's etcd key: a sealer binds the value to it, so a sealed value
// copied under another key does not open.
type Sealer interface {
	// Seal returns plain sealed; the result begins with SealedPrefix.
	Seal(key string, plain []byte) ([]byte, error)
	// Open returns the plain value of a sealed one, or an error that says
	// why it cannot (the wrong key, say) and what to do.
	Open(key string, sealed []byte) ([]byte, error)
}

// SealedPrefix begins every sealed value; a stored object's JSON begins
// with '{', so the two are never confused.
const SealedPrefix = "hearth:sealed:"

// SetSealer seals the values of kind's objects from now on. Values written
// before (plain JSON) are still read, and sealed at their next write.
func (s *Store) SetSealer(kind string, sl Sealer) { s.sealers[kind] = sl }

// open returns a stored value's plain JSON.
func (s *Store) open(k *api.KindInfo, key, value []byte) ([]byte, error) {
	if !bytes.HasPrefix(value, []byte(SealedPrefix)) {
		return value, nil
	}
	sl := s.sealers[k.Kind]
	if sl == nil {
		return nil, api.NewUnavailable("%s is encrypted in etcd, and this server has no key for %s", key, k.Plural)
	}
	return sl.Open(string(key), value)
}
