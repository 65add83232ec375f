package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"hearth.dev/hearth/agent/console/consoletest"
	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/server/servertest"
	"hearth.dev/hearth/serving"
)

// hostWithAgent creates a Host whose status points at agent (nil: no
// agent endpoint published yet).
func hostWithAgent(t *testing.T, env *servertest.Env, name string, agent *consoletest.Agent, pin string) {
	t.Helper()
	ctx := servertest.Ctx(t)
	h := servertest.Example("Host", "")
	h.GetMetadata().Name = name
	if _, err := env.Admin.Create(ctx, h); err != nil {
		t.Fatal(err)
	}
	if agent == nil {
		return
	}
	status := map[string]any{"phase": api.HostReady, "agentURL": agent.URL, "agentCertSHA256": pin}
	if _, err := env.Admin.Patch(ctx, "Host", "", name, map[string]any{"status": status}, true); err != nil {
		t.Fatal(err)
	}
}

// vmOn creates a VM in tenant on host and returns its uid.
func vmOn(t *testing.T, env *servertest.Env, tenant, name, host string) string {
	t.Helper()
	ctx := servertest.Ctx(t)
	env.Needs("VirtualMachine", tenant)
	vm := servertest.Example("VirtualMachine", tenant).(*api.VirtualMachine)
	vm.Metadata.Name = name
	vm.Spec.Host = host
	created, err := env.Admin.Create(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Admin.Patch(ctx, "VirtualMachine", tenant, name, map[string]any{"status": map[string]any{"phase": api.VMRunning, "host": host}}, true); err != nil {
		t.Fatal(err)
	}
	return created.GetMetadata().UID
}

func readLog(ctx context.Context, c *client.Client, tenant, name string, tail int64) (string, error) {
	o := api.LogOptions{}
	if tail >= 0 {
		o.TailBytes = &tail
	}
	rc, err := c.Logs(ctx, tenant, name, o)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	return string(data), err
}

func wantCode(t *testing.T, what string, err error, code int, msg string) {
	t.Helper()
	st, ok := err.(*api.Status)
	if !ok || st.Code != code || !strings.Contains(st.Message, msg) {
		t.Errorf("%s: got %v, want %d %q", what, err, code, msg)
	}
}

const lab = "Linux version 6.1\nlogin: "

func TestVMLogAndConsole(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers())
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	env.Tenant("b")
	member := env.User("a-member", "a", api.RoleTenantMember)
	viewer := env.User("a-viewer", "a", api.RoleViewer)
	intruder := env.User("b-admin", "b", api.RoleTenantAdmin)

	agent := consoletest.StartAgent(t, env.Server.CAPEM())
	hostWithAgent(t, env, "h1", agent, strings.ToUpper(agent.Fingerprint))
	vm := consoletest.NewVM(t, lab)
	agent.Add(vmOn(t, env, "a", "web-1", "h1"), vm)

	t.Run("log", func(t *testing.T) {
		for _, c := range []*client.Client{member, viewer, env.Admin} {
			got, err := readLog(ctx, c, "a", "web-1", -1)
			if err != nil || got != lab {
				t.Errorf("log: %q, %v; want %q", got, err, lab)
			}
		}
		if got, err := readLog(ctx, member, "a", "web-1", 7); err != nil || got != "login: " {
			t.Errorf("log, tail 7: %q, %v; want %q", got, err, "login: ")
		}
	})

	t.Run("follow", func(t *testing.T) {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		rc, err := member.Logs(fctx, "a", "web-1", api.LogOptions{Follow: true, TailBytes: new(int64)})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		vm.AppendLog(t, "root\n")
		line, err := bufio.NewReader(rc).ReadString('\n')
		if err != nil || line != "root\n" {
			t.Errorf("followed log: %q, %v; want the new line", line, err)
		}
	})

	t.Run("console", func(t *testing.T) {
		conn, err := member.Console(ctx, "a", "web-1")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("hello\r")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello\r" {
			t.Errorf("console echo: %q, %v; want %q", buf, err, "hello\r")
		}
		// The VM stops: the console ends like a file.
		vm.Hangup()
		if n, err := conn.Read(buf); err != io.EOF {
			t.Errorf("read after the VM stopped: %d, %v; want EOF", n, err)
		}
	})

	t.Run("isolation", func(t *testing.T) {
		for _, name := range []string{"web-1", "nope"} {
			_, err := readLog(ctx, intruder, "a", name, -1)
			wantCode(t, "tenant b reads tenant a's log of "+name, err, http.StatusForbidden, "another tenant")
			_, err = intruder.Console(ctx, "a", name)
			wantCode(t, "tenant b opens tenant a's console of "+name, err, http.StatusForbidden, "another tenant")
		}
		_, err := viewer.Console(ctx, "a", "web-1")
		wantCode(t, "a viewer opens the console", err, http.StatusForbidden, "needs the right to change the VM")
		_, err = readLog(ctx, member, "a", "nope", -1)
		wantCode(t, "log of a VM that does not exist", err, http.StatusNotFound, "not found")
	})

	// A followed log and a console end once the credential that opened
	// them no longer holds (here: its User is deleted, and its tokens
	// with it), as watches do.
	t.Run("revoked", func(t *testing.T) {
		leaver := env.User("a-leaver", "a", api.RoleTenantMember)
		rc, err := leaver.Logs(ctx, "a", "web-1", api.LogOptions{Follow: true, TailBytes: new(int64)})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		conn, err := leaver.Console(ctx, "a", "web-1")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := env.Admin.Delete(ctx, "User", "a", "a-leaver"); err != nil {
			t.Fatal(err)
		}
		ended := make(chan string, 2)
		go func() {
			_, err := io.Copy(io.Discard, rc)
			ended <- fmt.Sprintf("followed log: %v", err)
		}()
		go func() {
			_, err := io.Copy(io.Discard, conn)
			ended <- fmt.Sprintf("console: %v", err)
		}()
		deadline := time.After(15 * time.Second)
		for range 2 {
			select {
			case what := <-ended:
				t.Logf("ended: %s", what)
			case <-deadline:
				t.Fatalf("a followed log or a console outlived its deleted User's token by 15s")
			}
		}
	})

	t.Run("unavailable", func(t *testing.T) {
		hostWithAgent(t, env, "h2", nil, "")
		vmOn(t, env, "a", "web-2", "h2")
		_, err := readLog(ctx, member, "a", "web-2", -1)
		wantCode(t, "log on a host without agent", err, http.StatusServiceUnavailable, "host h2 has no agent endpoint yet")
		_, err = member.Console(ctx, "a", "web-2")
		wantCode(t, "console on a host without agent", err, http.StatusServiceUnavailable, "host h2 has no agent endpoint yet")

		// Something else answers at the agent's address: the pin refuses it.
		hostWithAgent(t, env, "h3", agent, strings.Repeat("ab", 32))
		vmOn(t, env, "a", "web-3", "h3")
		_, err = readLog(ctx, member, "a", "web-3", -1)
		wantCode(t, "log from an agent with the wrong certificate", err, http.StatusServiceUnavailable, "is not the one host h3 publishes")

		// The agent has not set the VM up yet.
		vmOn(t, env, "a", "web-4", "h1")
		_, err = readLog(ctx, member, "a", "web-4", -1)
		wantCode(t, "log of a VM the agent does not know", err, http.StatusServiceUnavailable, "has not started on host h1")
		_, err = member.Console(ctx, "a", "web-4")
		wantCode(t, "console of a VM the agent does not know", err, http.StatusServiceUnavailable, "has not started on host h1")
	})
}

// TestConsoleOutlivesTimeouts: with every API timeout at one second, a
// console and a followed log stay open and work three seconds on.
func TestConsoleOutlivesTimeouts(t *testing.T) {
	env := servertest.Start(t, servertest.WithoutControllers(), servertest.WithLimits(serving.Limits{
		ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: time.Second}))
	ctx := servertest.Ctx(t)
	env.Tenant("a")
	agent := consoletest.StartAgent(t, env.Server.CAPEM())
	hostWithAgent(t, env, "h1", agent, agent.Fingerprint)
	vm := consoletest.NewVM(t, lab)
	agent.Add(vmOn(t, env, "a", "web-1", "h1"), vm)

	rc, err := env.Admin.Logs(ctx, "a", "web-1", api.LogOptions{Follow: true, TailBytes: new(int64)})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	conn, err := env.Admin.Console(ctx, "a", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(3 * time.Second)

	vm.AppendLog(t, "late\n")
	if line, err := bufio.NewReader(rc).ReadString('\n'); err != nil || line != "late\n" {
		t.Errorf("followed log after 3s: %q, %v; want the new line", line, err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("hello\r")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello\r" {
		t.Errorf("console echo after 3s: %q, %v; want %q", buf, err, "hello\r")
	}
}
