package boot

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/boot/profile"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/storage"
)

// The decoders an unauthenticated client on the provisioning network
// reaches over HTTP, fuzzed (DHCP's and TFTP's are FuzzParse in dhcp
// and FuzzParseRequest in boot/tftp). The seeds run with go test; CI runs
// each with -fuzz for a while.

// fakeAPI is an API server that counts the requests it gets and answers
// each with 503: the requests fuzzed here may make none.
func fakeAPI(f *testing.F) (*client.Client, *atomic.Int64) {
	// Refusals are logged; thousands a second are noise here.
	log := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	f.Cleanup(func() { slog.SetDefault(log) })
	calls := new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, `{"kind":"Status","code":503,"message":"no API in fuzzing"}`, http.StatusServiceUnavailable)
	}))
	f.Cleanup(srv.Close)
	c, err := client.New(&client.Context{Name: "fuzz", Server: srv.URL})
	if err != nil {
		f.Fatal(err)
	}
	return c, calls
}

// fuzzService is a Service with one approved machine (node1), its
// profile, and a boot issued to machineAddr, whose API is c. Its boots
// are kept in memory only.
func fuzzService(t *testing.T, c *client.Client, images string) (s *Service, boot bootRecord) {
	s = &Service{cfg: Config{Name: "boot", DHCPMode: dhcp.ModeOff, MaxDiscovered: 2}, c: c,
		bootURL: "http://192.0.2.2:8080", key: []byte("0123456789abcdef0123456789abcdef"),
		machines: client.NewInformer(c, "Machine", "", client.ListOptions{}),
		profiles: client.NewInformer(c, "MachineProfile", "", client.ListOptions{}),
		keys:     client.NewInformer(c, "SSHKey", "", client.ListOptions{AllTenants: true}),
		sites:    client.NewInformer(c, "Site", "", client.ListOptions{}),
		boots:    &bootTable{byID: map[string]*bootRecord{}, byMachine: map[string]*bootRecord{}},
		images:   &storage.ImageCache{Dir: images},
		sources:  newLimiter(sourceBurst, sourceInterval), everyone: newLimiter(globalBurst, globalInterval),
		warnings: newLimiter(warningBurst, warningInterval),
		byIP:     map[netip.Addr]string{}, learned: map[string]netip.Addr{}, byMAC: map[string]string{}, macOf: map[string]string{},
		fresh: map[string]*api.Machine{}, creating: map[string]chan struct{}{}, seen: map[string]time.Time{},
		updates: make(chan func(context.Context), 1), refusals: map[string]refusalCount{},
	}
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"},
		Metadata: api.ObjectMeta{Name: "node1", UID: "uid-1", ResourceVersion: "1"},
		Spec:     api.MachineSpec{MAC: "52:54:00:aa:bb:01", Approved: true}}
	p := &api.MachineProfile{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "MachineProfile"},
		Metadata: api.ObjectMeta{Name: "p", ResourceVersion: "1"},
		Spec: api.MachineProfileSpec{ProfileBoot: api.ProfileBoot{Kernel: &api.BootFile{URL: "file:///nonexistent/vmlinuz"}},
			Files: []api.ProfileFile{{Name: "user-data", Template: "token {{ .Token }}"}}}}
	s.machines.Observe(m)
	s.profiles.Observe(p)
	s.byMAC[m.Spec.MAC], s.macOf["node1"] = "node1", m.Spec.MAC
	boot = s.boots.issue(m, machineAddr, time.Now())
	return s, boot
}

var machineAddr = netip.MustParseAddr("192.0.2.10")

// FuzzEntryQuery: the query of /boot.ipxe. Whatever it is, it yields one
// unicast-or-not 6-byte MAC or an error, a MAC yields a valid machine
// name, and the MAC reads back the same from its own query.
func FuzzEntryQuery(f *testing.F) {
	for _, q := range []string{"mac=52:54:00:aa:bb:01", "mac=52-54-00-AA-BB-01", "mac=52:54:00:aa:bb:01&mac=52:54:00:aa:bb:02",
		"mac=%35%32:54:00:aa:bb:01", "mac=", "", "mac=52:54:00:aa:bb:01:02:03", "mac=0000.0000.0000", "mac=%zz", "a=b;mac=1",
		"mac=52:54:00:aa:bb:01&busid=${net0/busid}", "mac=${net0/mac}"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		hw, err := parseEntryQuery(q)
		if err != nil {
			return
		}
		if len(hw) != 6 {
			t.Fatalf("query %q: a %d-byte MAC %v", q, len(hw), hw)
		}
		if es := api.ValidateName("name", machineName(hw.String())); len(es) > 0 {
			t.Fatalf("query %q: machine name %q: %v", q, machineName(hw.String()), es)
		}
		again, err := parseEntryQuery("mac=" + url.QueryEscape(hw.String()))
		if err != nil || again.String() != hw.String() {
			t.Fatalf("query %q: MAC %v reads back as %v, %v", q, hw, again, err)
		}
	})
}

// FuzzBootPaths: the paths and queries a client can send the HTTP side,
// through its real routes. Nothing but the issued boot's file, requested
// from the machine's address, is served; no request reaches the API; and
// what the path decoders accept fits into an iPXE script as one word.
func FuzzBootPaths(f *testing.F) {
	f.Add("GET", "/machines/node1/boots/BOOT/files/user-data", "192.0.2.10")
	f.Add("GET", "/machines/node1/boots/BOOT/files/user-data", "192.0.2.11")
	f.Add("GET", "/machines/node1/boots/BOOT/files/meta-data", "192.0.2.10")
	f.Add("GET", "/machines/node1/boots/BOOT/files/..%2Fboots.json", "192.0.2.10")
	f.Add("GET", "/machines/node1/boots/BOOT/artifacts/0123456789abcdef/vmlinuz", "192.0.2.10")
	f.Add("GET", "/machines/node1/boots/00000000000000000000000000000000/files/user-data", "192.0.2.10")
	f.Add("GET", "/machines/node1/files/user-data", "192.0.2.10")
	f.Add("GET", "/machines/node%31/boots/BOOT/files/user-data", "192.0.2.10")
	f.Add("GET", "/machines/../boots/BOOT/files/user-data", "192.0.2.10")
	f.Add("GET", "/machines/node2/boot.ipxe", "192.0.2.10")
	f.Add("GET", "/boot.ipxe?mac=52:54:00:aa:bb:02", "192.0.2.12")
	f.Add("GET", "/boot.ipxe?mac=52:54:00:aa:bb:01", "192.0.2.12")
	f.Add("POST", "/machines/node1/boots/BOOT/report?token=x", "192.0.2.10")
	f.Add("GET", "/artifacts/0123456789abcdef/vmlinuz", "192.0.2.10")
	c, apiCalls := fakeAPI(f)
	images := f.TempDir()
	f.Fuzz(func(t *testing.T, method, target, from string) {
		s, boot := fuzzService(t, c, images)
		apiCalls.Store(0)
		target = strings.ReplaceAll(target, "BOOT", boot.ID)
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t\r\n#") || !validMethod(method) {
			return
		}
		addr, err := netip.ParseAddr(from)
		if err != nil {
			return
		}
		// Read as the server reads it: a request it cannot parse never
		// reaches the routes.
		raw := method + " " + target + " HTTP/1.1\r\nHost: 192.0.2.2:8080\r\nUser-Agent: fuzz\r\nContent-Length: 10\r\n\r\nip=1.2.3.4"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		req.RemoteAddr = netip.AddrPortFrom(addr, 40000).String()
		// The User-Agent is not iPXE's: nothing is discovered.
		rec := httptest.NewRecorder()
		s.routes().ServeHTTP(rec, req)
		if n := apiCalls.Load(); n != 0 {
			t.Fatalf("%s %s from %s made %d API requests", method, target, from, n)
		}
		if rec.Code/100 == 2 {
			bootFile := method == "GET" && addr == machineAddr &&
				(req.URL.Path == "/machines/node1/boots/"+boot.ID+"/files/user-data" ||
					req.URL.Path == "/machines/node1/boots/"+boot.ID+"/files/meta-data")
			// The entry chains a known MAC to its machine's script; the
			// script is anyone's to ask for (with DHCP off, the first
			// address to ask gets the boot: see clients.go).
			chain := req.URL.Path == "/boot.ipxe" && rec.Body.String() == "#!ipxe\nchain http://192.0.2.2:8080/machines/node1/boot.ipxe\n"
			script := req.URL.Path == "/machines/node1/boot.ipxe"
			if !bootFile && !chain && !script && req.URL.Path != "/healthz" {
				t.Fatalf("%s %s from %s: %d %q", method, target, from, rec.Code, rec.Body.String())
			}
		}
		// What the decoders accept is a path iPXE can be given.
		name, id, file := req.PathValue("name"), req.PathValue("boot"), req.PathValue("file")
		if ref, err := parseBootRef(name, id); err == nil && parseFileName(file) == nil {
			u := profile.BootURL(s.bootURL, ref.machine, ref.boot) + "/files/" + file
			if why := profile.CheckWord(u); why != "" {
				t.Fatalf("accepted %s/%s/%s, whose URL %q is not a boot word: %s", name, id, file, u, why)
			}
		}
	})
}

func validMethod(m string) bool {
	switch m {
	case "GET", "POST", "HEAD", "PUT", "DELETE":
		return true
	}
	return false
}

// FuzzReport: a report's body and token. A report parseReport accepts
// holds only IP addresses and host keys of one line each, within the
// limits; a report without the boot's token is refused before anything
// is written.
func FuzzReport(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "ip=10.0.0.5&hostname=n1&ssh_host_key=ssh-ed25519+AAAAC3NzaC1lZDI1NTE5AAAAIE7Xr3CV9ZJ6aJqzCgH8vxqPqVJ8Qz7kT9Y9A1d7Xh3F+root%40n1&result=ok", "")
	f.Add("application/json", `{"ips":["10.0.0.5","fd00::5"],"sshHostKeys":["ecdsa-sha2-nistp256 AAAA root@x"],"result":"ok"}`, "")
	f.Add("application/json; charset=utf-8", `{"ips":["not-an-ip"]}`, "x")
	f.Add("", "ip=%zz", "")
	f.Add("text/plain", "ip=1.2.3.4", "")
	f.Add("application/x-www-form-urlencoded", "ssh_host_key=ssh-rsa+AAAA%0Assh-rsa+BBBB", "")
	f.Add("application/json", `{"ips":null,"result":"failed","message":"disk\nerror"}`, "")
	f.Add("application/json", `[1,2]`, "")
	c, apiCalls := fakeAPI(f)
	images := f.TempDir()
	f.Fuzz(func(t *testing.T, ctype, body, token string) {
		rep, err := parseReport(ctype, strings.NewReader(body))
		if err == nil {
			if len(rep.IPs) > maxReportIPs || len(rep.SSHHostKeys) > maxReportKeys || len(rep.Message) > maxMessage || len(rep.Result) > maxResult {
				t.Fatalf("accepted a report over its limits: %+v", rep)
			}
			for _, ip := range rep.IPs {
				if a, err := netip.ParseAddr(ip); err != nil || a.String() != ip {
					t.Fatalf("accepted address %q", ip)
				}
			}
			for _, k := range rep.SSHHostKeys {
				if checkHostKey(k) != "" || strings.ContainsAny(k, "\r\n") {
					t.Fatalf("accepted host key %q", k)
				}
			}
		}

		s, boot := fuzzService(t, c, images)
		apiCalls.Store(0)
		if s.tokenMatches(boot.ID, token) {
			return // not a guess the fuzzer makes
		}
		req := httptest.NewRequest("POST", "http://192.0.2.2:8080/machines/node1/boots/"+boot.ID+"/report", strings.NewReader(body))
		req.RemoteAddr = netip.AddrPortFrom(machineAddr, 40000).String()
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		s.routes().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || apiCalls.Load() != 0 {
			t.Fatalf("a report with token %q: %d %q, %d API requests; want 403 and none", token, rec.Code, rec.Body.String(), apiCalls.Load())
		}
		if b, _ := s.boots.lookup(boot.ID); b.Reported != nil {
			t.Fatalf("a refused report spent the boot's token")
		}
	})
}
