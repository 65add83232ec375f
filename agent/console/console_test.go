package console_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"hearth.dev/hearth/agent/console"
	"hearth.dev/hearth/agent/console/consoletest"
	"hearth.dev/hearth/compute"
	"hearth.dev/hearth/pki"
)

const bootLog = "Linux version 6.1\nWelcome to the lab\nlogin: "

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// plainAgent serves Handler without TLS, for tests of what it serves.
func plainAgent(t *testing.T, vms map[string]*consoletest.VM) *httptest.Server {
	srv := httptest.NewServer(console.Handler(func(uid string) (string, bool) {
		v, ok := vms[uid]
		if !ok {
			return "", false
		}
		if _, err := os.Stat(v.Dir); err != nil {
			return "", false
		}
		return v.Dir, true
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func TestLog(t *testing.T) {
	vm := consoletest.NewVM(t, bootLog)
	empty := consoletest.NewVM(t, "")
	os.Remove(filepath.Join(empty.Dir, compute.ConsoleLog))
	srv := plainAgent(t, map[string]*consoletest.VM{"u1": vm, "u2": empty})
	tests := []struct {
		path     string
		wantCode int
		want     string
	}{
		{"/v1/vms/u1/log", 200, bootLog},
		{"/v1/vms/u1/log?tail=7", 200, "login: "},
		{"/v1/vms/u1/log?tail=0", 200, ""},
		{"/v1/vms/u1/log?tail=100000", 200, bootLog},
		{"/v1/vms/u1/log?tailLines=1", 200, "login: "},
		{"/v1/vms/u1/log?tailLines=2", 200, "Welcome to the lab\nlogin: "},
		{"/v1/vms/u1/log?tailLines=100", 200, bootLog},
		{"/v1/vms/u2/log?tailLines=5", 200, ""},
		{"/v1/vms/u1/log?tailLines=x", 400, "want a number of lines"},
		{"/v1/vms/u1/log?tail=7&tailLines=1", 400, "not both"},
		{"/v1/vms/u2/log", 200, ""}, // not started yet: nothing written
		{"/v1/vms/u1/log?tail=-1", 400, "want a number of bytes"},
		{"/v1/vms/u1/log?follow=maybe", 400, "follow"},
		{"/v1/vms/nope/log", 404, "no VM with uid nope on this host"},
		{"/v1/other", 404, "no such agent endpoint"},
	}
	for _, tt := range tests {
		code, body := get(t, srv.URL+tt.path)
		if code != tt.wantCode {
			t.Errorf("GET %s: code %d, want %d (%s)", tt.path, code, tt.wantCode, body)
		}
		if (tt.wantCode == 200 && body != tt.want) || (tt.wantCode != 200 && !strings.Contains(body, tt.want)) {
			t.Errorf("GET %s: body %q, want %q", tt.path, body, tt.want)
		}
	}
}

// readUntil reads from r until what was read ends with want.
func readUntil(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	var got strings.Builder
	for !strings.HasSuffix(got.String(), want) {
		b, err := r.ReadByte()
		if err != nil {
			t.Fatalf("reading %q: got %q, then %v", want, got.String(), err)
		}
		got.WriteByte(b)
	}
}

func TestLogFollow(t *testing.T) {
	vm := consoletest.NewVM(t, bootLog)
	srv := plainAgent(t, map[string]*consoletest.VM{"u1": vm})
	req, _ := http.NewRequestWithContext(ctxFor(t), http.MethodGet, srv.URL+"/v1/vms/u1/log?follow=1&tail=7", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	readUntil(t, r, "login: ")

	vm.AppendLog(t, "root\nPassword: ")
	readUntil(t, r, "root\nPassword: ")

	// A restarted QEMU truncates the log: it is followed from its start.
	if err := os.WriteFile(filepath.Join(vm.Dir, compute.ConsoleLog), []byte("boot 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	readUntil(t, r, "boot 2\n")

	// The VM's directory goes (it was deleted): the stream ends.
	vm.Stop()
	os.RemoveAll(vm.Dir)
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("after the VM went: read %q, %v; want the end of the stream", rest, err)
	}
}

func dialConsole(t *testing.T, ctx context.Context, url string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, code)
	}
	return c
}

func expectMessage(t *testing.T, ctx context.Context, c *websocket.Conn, want string) {
	t.Helper()
	var got string
	for len(got) < len(want) {
		typ, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: got %q, then %v; want %q", got, err, want)
		}
		if typ != websocket.MessageBinary {
			t.Errorf("message type %v, want binary", typ)
		}
		got += string(data)
	}
	if got != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func TestConsoleSharedByViewers(t *testing.T) {
	ctx := ctxFor(t)
	vm := consoletest.NewVM(t, "")
	srv := plainAgent(t, map[string]*consoletest.VM{"u1": vm})
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/vms/u1/console"

	a := dialConsole(t, ctx, url)
	if err := a.Write(ctx, websocket.MessageBinary, []byte("hello\r")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, ctx, a, "hello\r")

	// A second viewer shares the one connection QEMU allows, sees what
	// the guest prints, and may type too.
	b := dialConsole(t, ctx, url)
	if err := b.Write(ctx, websocket.MessageBinary, []byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, ctx, a, "ls\r")
	expectMessage(t, ctx, b, "ls\r")
	if n := vm.Accepted(); n != 1 {
		t.Errorf("the console socket accepted %d connections for two viewers, want 1", n)
	}

	// Everyone leaves: the socket is let go, and the next viewer gets it
	// afresh.
	a.Close(websocket.StatusNormalClosure, "")
	b.Close(websocket.StatusNormalClosure, "")
	for deadline := time.Now().Add(5 * time.Second); vm.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the console socket is still held after every viewer left")
		}
	}
	c := dialConsole(t, ctx, url)
	if err := c.Write(ctx, websocket.MessageBinary, []byte("x")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, ctx, c, "x")
	if n := vm.Accepted(); n != 2 {
		t.Errorf("after everyone left and one came back, %d connections were accepted, want 2", n)
	}

	// The VM stops: the viewer's websocket closes normally, saying why.
	vm.Hangup()
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || !strings.Contains(ce.Reason, "VM stopped") {
		t.Errorf("read after the VM stopped: %v, want a normal close saying the VM stopped", err)
	}
}

func TestConsoleUnavailable(t *testing.T) {
	vm := consoletest.NewVM(t, "")
	vm.Stop() // QEMU is gone; its socket file may linger
	srv := plainAgent(t, map[string]*consoletest.VM{"u1": vm})
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/vms/u1/console"
	_, resp, err := websocket.Dial(ctxFor(t), url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial a stopped VM's console: %v, want 503", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "is the VM running?") {
		t.Errorf("body %q, want it to ask whether the VM runs", body)
	}
}

func TestLoadOrCreateCert(t *testing.T) {
	dir := t.TempDir()
	cert, fp, err := console.LoadOrCreateCert(dir, []string{"192.168.1.10", "h1.lan"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if fp != pki.Fingerprint(leaf.Raw) || len(fp) != 64 {
		t.Errorf("fingerprint %q is not the hex SHA-256 of the certificate", fp)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", leaf.PublicKey)
	}
	if years := time.Until(leaf.NotAfter).Hours() / 24 / 365; years < 9.9 {
		t.Errorf("valid for %.1f years, want 10", years)
	}
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "192.168.1.10" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "h1.lan" {
		t.Errorf("SANs %v %v, want 192.168.1.10 and h1.lan", leaf.IPAddresses, leaf.DNSNames)
	}
	if fi, err := os.Stat(filepath.Join(dir, console.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}

	// Restarted: the same certificate, so the published pin holds.
	_, again, err := console.LoadOrCreateCert(dir, []string{"h1.lan"})
	if err != nil || again != fp {
		t.Errorf("reloaded fingerprint %q, %v; want %q", again, err, fp)
	}
	// A new address: a new certificate.
	_, moved, err := console.LoadOrCreateCert(dir, []string{"192.168.1.11"})
	if err != nil || moved == fp {
		t.Errorf("fingerprint after the address changed: %q, %v; want a new one", moved, err)
	}
}

// clientCert issues a client certificate from ca.
func clientCert(t *testing.T, ca *pki.CA, cn string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueClient(cn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestMutualTLS(t *testing.T) {
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := pki.NewCA("other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	agent := consoletest.StartAgent(t, ca.CertPEM)
	agent.Add("u1", consoletest.NewVM(t, bootLog))

	tests := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"the server's certificate", []tls.Certificate{clientCert(t, ca, pki.ServerCommonName)}, true},
		{"another name from the CA", []tls.Certificate{clientCert(t, ca, "hearth-agent")}, false},
		{"the server's name from another CA", []tls.Certificate{clientCert(t, otherCA, pki.ServerCommonName)}, false},
		{"no certificate", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
				Certificates:       tt.certs,
				InsecureSkipVerify: true, // pinned below, as the server does
				VerifyConnection: func(cs tls.ConnectionState) error {
					if pki.Fingerprint(cs.PeerCertificates[0].Raw) != agent.Fingerprint {
						return errors.New("pin mismatch")
					}
					return nil
				},
			}}}
			defer hc.CloseIdleConnections()
			resp, err := hc.Get(agent.URL + "/v1/vms/u1/log")
			if !tt.ok {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("GET with %s: %s, want a TLS error", tt.name, resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET with %s: %v", tt.name, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if string(body) != bootLog {
				t.Errorf("log %q, want %q", body, bootLog)
			}
		})
	}
}

func TestServerTLSRejectsBadCA(t *testing.T) {
	cert, _, err := console.LoadOrCreateCert(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := console.ServerTLS(cert, []byte("not PEM")); err == nil {
		t.Error("ServerTLS with a CA that is not PEM: nil error, want one")
	}
}
