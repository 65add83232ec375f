package cephtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/storage/cephtest"
)

func TestMain(m *testing.M) { cephtest.Main(m) }

// TestCluster starts the cluster and checks that a user with the rbd
// profile, and only its key, can make an image in the pool.
func TestCluster(t *testing.T) {
	c := cephtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Ceph(ctx, "osd", "pool", "get", c.Pool, "size")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "size: 1" {
		t.Errorf("pool %s: got %q, want size: 1", c.Pool, got)
	}
	key, err := c.AddUser(ctx, "cephtest", c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 40 {
		t.Errorf("key %q: want 40 base64 characters", key)
	}
	if c2 := cephtest.Start(t); c2 != c {
		t.Errorf("second Start returned another cluster")
	}
}
