package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// Fencer is a driver that can cut every client off one volume at the
// storage itself, so that a QEMU on a host that is lost (dead, hung, or
// cut off from the control plane but not from the storage) can never
// write to it again, whatever becomes of that host. Only RBD can: Ceph
// refuses every request of a blocklisted client.
type Fencer interface {
	// Fence cuts every client that has volume id open off the storage,
	// and returns the clients it cut off. The caller must not have the
	// volume open itself.
	Fence(ctx context.Context, id string) ([]string, error)
}

// blocklistSeconds is how long a fenced client stays blocklisted: for
// good, as far as a VM is concerned (ten years). A fenced client is one
// process's session (its address carries a nonce), so nothing that
// starts on its host afterwards is refused.
const blocklistSeconds = 10 * 365 * 24 * 3600

// rbdClient is a client that has an image open: a watcher (every open
// image has a watch on its header) or a lock holder.
type rbdClient struct {
	Address string `json:"address"`
}

// Fence blocklists every client watching or locking the volume's image
// (`ceph osd blocklist add`, which the rbd profile's monitor capability
// allows), then checks that none is left: a blocklisted client's watch
// goes at once, and the OSDs refuse its writes from then on, frozen or
// not. The exclusive lock of a fenced QEMU is broken by the next QEMU's
// librbd when it finds its owner blocklisted.
func (r *RBD) Fence(ctx context.Context, id string) ([]string, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	spec := r.spec(rbdVolume(id))
	var fenced []string
	blocked := map[string]bool{}
	// A second look catches a client that opened the image while the
	// first ones were cut off (none should: the VM runs nowhere else).
	for range 3 {
		clients, err := r.clients(ctx, spec)
		if err != nil {
			return fenced, err
		}
		fresh := 0
		for _, addr := range clients {
			if blocked[addr] {
				// Blocklisted already; its watch may linger a moment,
				// but the OSDs refuse it.
				continue
			}
			fresh++
			if _, err := r.cli(ctx, "ceph", "osd", "blocklist", "add", addr, strconv.Itoa(blocklistSeconds)); err != nil {
				return fenced, fmt.Errorf("blocklisting %s, which has %s open: %w", addr, spec, err)
			}
			blocked[addr] = true
			fenced = append(fenced, addr)
		}
		if fresh == 0 {
			return fenced, nil
		}
	}
	return fenced, fmt.Errorf("%s keeps being opened by new clients while it is fenced; try again", spec)
}

// clients lists the addresses of the clients that have an image open.
func (r *RBD) clients(ctx context.Context, spec string) ([]string, error) {
	out, err := r.cli(ctx, "rbd", "status", "--format", "json", spec)
	if err != nil {
		return nil, err
	}
	var st struct {
		Watchers []rbdClient `json:"watchers"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("rbd status %s: unexpected output: %w", spec, err)
	}
	out, err = r.cli(ctx, "rbd", "lock", "ls", "--format", "json", spec)
	if err != nil {
		return nil, err
	}
	var locks []rbdClient
	if err := json.Unmarshal(out, &locks); err != nil {
		// Older rbd prints an object keyed by lock id.
		var byID map[string]rbdClient
		if json.Unmarshal(out, &byID) != nil {
			return nil, fmt.Errorf("rbd lock ls %s: unexpected output: %w", spec, err)
		}
		for _, l := range byID {
			locks = append(locks, l)
		}
	}
	seen := map[string]bool{}
	var addrs []string
	for _, c := range append(st.Watchers, locks...) {
		if c.Address != "" && !seen[c.Address] {
			seen[c.Address] = true
			addrs = append(addrs, c.Address)
		}
	}
	return addrs, nil
}
