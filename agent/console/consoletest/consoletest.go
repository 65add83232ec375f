// Package consoletest stands in for QEMU and an agent in tests of consoles
// and console logs: a VM runtime directory with a console log and an echoing
// console socket, and console.Handler served over the agent's mutual TLS on
// loopback.
package consoletest

import (
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"hearth.dev/hearth/agent/console"
	"hearth.dev/hearth/compute"
)

// VM is a VM's runtime directory as QEMU leaves it: a console log, and a
// console socket that echoes what it is sent, serving one client at a
// time as QEMU's socket chardev does.
type VM struct {
	Dir string
	ln  net.Listener

	mu       sync.Mutex
	accepted int
	cur      net.Conn
}

// NewVM makes a VM directory whose console log holds log.
func NewVM(t testing.TB, log string) *VM {
	t.Helper()
	// Not t.TempDir: a unix socket's path must stay under 108 bytes, and
	// test names make those long.
	dir, err := os.MkdirTemp("", "hearth-vm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, compute.ConsoleLog), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, compute.ConsoleSocket))
	if err != nil {
		t.Fatal(err)
	}
	v := &VM{Dir: dir, ln: ln}
	t.Cleanup(v.Stop)
	go v.serve()
	return v
}

func (v *VM) serve() {
	for {
		c, err := v.ln.Accept()
		if err != nil {
			return
		}
		v.mu.Lock()
		v.accepted++
		v.cur = c
		v.mu.Unlock()
		_, _ = io.Copy(c, c)
		c.Close()
		v.mu.Lock()
		v.cur = nil
		v.mu.Unlock()
	}
}

// Accepted counts the console connections accepted so far.
func (v *VM) Accepted() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.accepted
}

// Connected reports whether a client holds the console socket.
func (v *VM) Connected() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cur != nil
}

// Hangup closes the connected client's connection, as QEMU does when the
// VM stops; the socket accepts the next client.
func (v *VM) Hangup() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur != nil {
		v.cur.Close()
	}
}

// Stop closes the socket and its client.
func (v *VM) Stop() {
	v.ln.Close()
	v.Hangup()
}

// AppendLog adds s to the console log, as the guest printing would.
func (v *VM) AppendLog(t testing.TB, s string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(v.Dir, compute.ConsoleLog), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// Agent is console.Handler behind console.ServerTLS on a loopback port.
type Agent struct {
	// URL and Fingerprint are what an agent publishes in its Host's status
	// (agentURL, agentCertSHA256).
	URL         string
	Fingerprint string
	Server      *httptest.Server

	mu  sync.Mutex
	vms map[string]string // uid → directory
}

// StartAgent serves consoles to clients with a certificate from the CA
// caPEM, until the test ends.
func StartAgent(t testing.TB, caPEM []byte) *Agent {
	t.Helper()
	cert, fp, err := console.LoadOrCreateCert(t.TempDir(), []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := console.ServerTLS(cert, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{Fingerprint: fp, vms: map[string]string{}}
	a.Server = httptest.NewUnstartedServer(console.Handler(a.resolve))
	a.Server.TLS = conf
	a.Server.StartTLS()
	t.Cleanup(a.Server.Close)
	a.URL = a.Server.URL
	return a
}

// Add makes the VM with uid known to the agent, in v's directory.
func (a *Agent) Add(uid string, v *VM) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.vms[uid] = v.Dir
}

// Remove forgets a VM, as an agent does when it is deleted.
func (a *Agent) Remove(uid string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.vms, uid)
}

func (a *Agent) resolve(uid string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	dir, ok := a.vms[uid]
	return dir, ok
}
