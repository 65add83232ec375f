package server

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/store"
)

// Objects of Confidential kinds (Secrets) are sealed in etcd with
// AES-256-GCM under a key kept outside etcd: a file in each server's data
// directory (--secrets-key-file, default DATA-DIR/secrets.key), made by
// the first server of a cluster. Every server of an HA control plane needs
// the same file. etcd holds only the key's id (a hash), under
// secretsKeyIDKey, so a server with no key or another key knows it at
// start; it logs why and answers requests on Secrets with a 503 that says
// what to do, while everything else works.
//
// A sealed value is SealedPrefix "aesgcm:" <key id> ":" <nonce> <ciphertext>,
// with the object's etcd key as additional data, so a value copied under
// another key does not open.

const secretsKeyIDKey = "/hearth/secrets/key-id"

// secretsKeySize is AES-256's key size.
const secretsKeySize = 32

type secretsKey struct {
	id   string
	aead cipher.AEAD
	// unusable says why this server cannot seal or open (no key, or not
	// the cluster's); nil when it can.
	unusable error
}

// loadSecretsKey reads this server's key file, making it if neither the
// file nor the cluster's key id exists yet (the first server), and checks
// it against the id recorded in etcd.
func loadSecretsKey(ctx context.Context, etcd *clientv3.Client, path string) (*secretsKey, error) {
	resp, err := etcd.Get(ctx, secretsKeyIDKey)
	if err != nil {
		return nil, fmt.Errorf("reading the secrets key id from etcd: %w", err)
	}
	recorded := ""
	if len(resp.Kvs) > 0 {
		recorded = string(resp.Kvs[0].Value)
	}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && recorded != "":
		k := &secretsKey{unusable: api.NewUnavailable("this server has no secrets key (%s): the cluster's Secrets are encrypted with key %s, "+
			"which another server made; copy that server's key file here (every server needs the same one) and restart this server", path, recorded)}
		slog.Error("secrets cannot be read or written through this server", "err", k.unusable)
		return k, nil
	case errors.Is(err, fs.ErrNotExist):
		raw = make([]byte, secretsKeySize)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		text := base64.StdEncoding.EncodeToString(raw) + "\n"
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("--secrets-key-file: %w", err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, fmt.Errorf("--secrets-key-file: writing a new key: %w", err)
		}
		slog.Info("made a new secrets key; give every other server of this cluster a copy", "file", path)
		raw = []byte(text)
	case err != nil:
		return nil, fmt.Errorf("--secrets-key-file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		slog.Warn("the secrets key file can be read by others than its owner: chmod 600 it", "file", path, "mode", fi.Mode().Perm())
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != secretsKeySize {
		return nil, fmt.Errorf("--secrets-key-file %s: want %d random bytes in base64 on one line (as `head -c 32 /dev/urandom | base64` makes)", path, secretsKeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("hearth secrets key id\x00"), key...))
	k := &secretsKey{id: hex.EncodeToString(sum[:8]), aead: aead}
	if recorded == "" {
		tr, err := etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(secretsKeyIDKey), "=", 0)).
			Then(clientv3.OpPut(secretsKeyIDKey, k.id)).Else(clientv3.OpGet(secretsKeyIDKey)).Commit()
		if err != nil {
			return nil, fmt.Errorf("recording the secrets key id in etcd: %w", err)
		}
		recorded = k.id
		if !tr.Succeeded && len(tr.Responses) > 0 && len(tr.Responses[0].GetResponseRange().Kvs) > 0 {
			recorded = string(tr.Responses[0].GetResponseRange().Kvs[0].Value) // another server was first
		}
	}
	if recorded != k.id {
		k.unusable = api.NewUnavailable("this server's secrets key (%s, id %s) is not the one the cluster's Secrets are encrypted with (id %s); "+
			"copy the key file of a server that has it here (every server needs the same one) and restart this server", path, k.id, recorded)
		slog.Error("secrets cannot be read or written through this server", "err", k.unusable)
	}
	return k, nil
}

func (k *secretsKey) prefix() []byte {
	return []byte(store.SealedPrefix + "aesgcm:" + k.id + ":")
}

// Seal implements store.Sealer.
func (k *secretsKey) Seal(key string, plain []byte) ([]byte, error) {
	if k.unusable != nil {
		return nil, k.unusable
	}
	out := k.prefix()
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plain, []byte(key)), nil
}

// Open implements store.Sealer.
func (k *secretsKey) Open(key string, sealed []byte) ([]byte, error) {
	if k.unusable != nil {
		return nil, k.unusable
	}
	rest, ok := bytes.CutPrefix(sealed, k.prefix())
	if !ok {
		id, _, _ := strings.Cut(strings.TrimPrefix(string(sealed[:min(len(sealed), 64)]), store.SealedPrefix+"aesgcm:"), ":")
		return nil, api.NewUnavailable("%s is encrypted with secrets key %s, not this server's %s", key, id, k.id)
	}
	n := k.aead.NonceSize()
	if len(rest) < n {
		return nil, api.NewInternal("%s: the sealed value is cut short", key)
	}
	plain, err := k.aead.Open(nil, rest[:n], rest[n:], []byte(key))
	if err != nil {
		return nil, api.NewInternal("%s: the sealed value does not open with this server's secrets key (changed in etcd, or moved from another key): %v", key, err)
	}
	return plain, nil
}
