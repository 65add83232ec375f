package server_test

import (
	"context"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server"
	"hearth.dev/hearth/server/servertest"
)

// TestHostWritesWaitTheirTurn: with every slot of hosts' writes taken, a
// host's write waits (and is done once a slot frees), while its lease
// renewal, its reads and an administrator's write go at once: a host
// whose VMs' writes queue is never declared dead for it, and the
// controllers' and people's requests never wait behind a thousand
// agents.
func TestHostWritesWaitTheirTurn(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	h1 := env.Host("h1")
	give := server.FillHostWrites(env.Server)
	given := false
	defer func() {
		if !given {
			give()
		}
	}()
	wrote := make(chan error, 1)
	go func() {
		_, err := h1.PatchStatus(ctx, "Host", "", "h1", map[string]any{"cpus": 3})
		wrote <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); server.HostWritesWaiting(env.Server) != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the host's status write never waited for its turn")
		}
	}
	quick, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := h1.RenewHostLease(quick, "h1"); err != nil {
		t.Fatalf("lease renewal while the host's writes wait: %v", err)
	}
	if _, err := h1.Get(quick, "Host", "", "h1"); err != nil {
		t.Fatalf("a host's read while its writes wait: %v", err)
	}
	if _, err := env.Admin.Patch(quick, "Host", "", "h1", map[string]any{"metadata": map[string]any{"labels": map[string]string{"rack": "r1"}}}, false); err != nil {
		t.Fatalf("an administrator's write while hosts' writes wait: %v", err)
	}
	select {
	case err := <-wrote:
		t.Fatalf("the host's write was done while every slot was taken (%v)", err)
	default:
	}
	give()
	given = true
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("the host's write, once its turn came: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the host's write was not done once slots were free")
	}
	o, err := env.Admin.Get(ctx, "Host", "", "h1")
	if err != nil {
		t.Fatal(err)
	}
	if h := o.(*api.Host); h.Status.CPUs != 3 || h.Metadata.Labels["rack"] != "r1" {
		t.Fatalf("host h1: cpus %d, labels %v; want the host's cpus 3 and the admin's rack r1", h.Status.CPUs, h.Metadata.Labels)
	}
}
