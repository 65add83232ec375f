package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth.dev/hearth/agent"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/server/servertest"
)

// syncBuffer is a log the agent writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAgentHostDeleted: joining makes the agent's Host from the join
// token (site, labels) and the agent's address; when the Host is deleted,
// its credential dies with it, and the agent says so once, backs off
// instead of retrying in a loop, and joins again by itself once a new
// join token is in its join token file. It runs no VM, so it needs
// neither root nor QEMU.
func TestAgentHostDeleted(t *testing.T) {
	env := servertest.Start(t)
	ctx := servertest.Ctx(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "join-token")
	writeToken := func(req api.TokenRequest) {
		t.Helper()
		if err := os.WriteFile(tokenFile, []byte(env.JoinToken(req).Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken(api.TokenRequest{Site: "home", Labels: map[string]string{"rack": "a"}})

	var logs syncBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(actx, agent.Config{Server: env.Server.URL(), JoinTokenFile: tokenFile, CAFile: filepath.Join(env.DataDir, "ca.crt"),
			Name: "h1", DataDir: filepath.Join(dir, "data"), Address: "127.0.0.1", Listen: fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t)),
			Resync: 2 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	ready := func() *api.Host {
		var h *api.Host
		servertest.Eventually(t, 40*time.Second, func() error {
			obj, err := env.Admin.Get(servertest.Ctx(t), "Host", "", "h1")
			if err != nil {
				return err
			}
			if h = obj.(*api.Host); h.Status.Phase != api.HostReady {
				return fmt.Errorf("host is %q", h.Status.Phase)
			}
			return nil
		})
		return h
	}
	h := ready()
	if h.Spec.Site != "home" || h.Metadata.Labels["rack"] != "a" || h.Spec.Address != "127.0.0.1" {
		t.Errorf("the Host joining made: %s", servertest.JSON(h))
	}
	// Heartbeats every second or so, so the deletion is noticed soon.
	if _, err := env.Admin.Patch(ctx, "Host", "", "h1", map[string]any{"spec": map[string]any{"leaseSeconds": 5}}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)

	if _, err := env.Admin.Delete(ctx, "Host", "", "h1"); err != nil {
		t.Fatal(err)
	}
	const said = "host credential revoked or Host deleted: re-join with a new join token"
	servertest.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(logs.String(), said) {
			return fmt.Errorf("the agent has not said %q", said)
		}
		return nil
	})
	// Refused again and again (its join token is spent), it says so
	// once and does not spin.
	time.Sleep(12 * time.Second)
	if n := strings.Count(logs.String(), said); n != 1 {
		t.Errorf("the agent said %q %d times, want once:\n%s", said, n, logs.String())
	}
	if n := strings.Count(logs.String(), "heartbeat failed"); n > 1 {
		t.Errorf("the agent went on beating a deleted Host (%d failures):\n%s", n, logs.String())
	}
	if _, err := env.Admin.Get(servertest.Ctx(t), "Host", "", "h1"); !api.IsNotFound(err) {
		t.Fatalf("the deleted Host: got %v, want NotFound (an agent must not make it again by itself)", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the agent exited: %v", err)
	default:
	}

	// A new join token in the file: the agent joins again by itself.
	writeToken(api.TokenRequest{Site: "home"})
	h = ready()
	if len(h.Metadata.Labels) != 0 || h.Spec.Site != "home" {
		t.Errorf("the Host made by joining again: %s", servertest.JSON(h))
	}
	if !strings.Contains(logs.String(), "joined again") {
		t.Errorf("the agent did not say it joined again:\n%s", logs.String())
	}
}
