package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/boot/dhcp"
	"hearth.dev/hearth/boot/profile"
	"hearth.dev/hearth/boot/tftp"
	"hearth.dev/hearth/serving"
)

// Decide answers one DHCP request: what the machine boots next.
func (s *Service) Decide(ctx context.Context, req dhcp.Request) dhcp.Decision {
	m, err := s.discover(ctx, req)
	if err != nil {
		slog.Warn("discovering a machine", "mac", req.MAC, "err", err)
		return dhcp.Decision{Ignore: true}
	}
	d := dhcp.Decision{Hostname: m.Spec.Hostname}
	if d.Hostname == "" {
		d.Hostname = m.Metadata.Name
	}
	if req.IsIPXE {
		// iPXE fetches its script over HTTP: the machine's own, which
		// knows whether it installs, waits for approval or boots its disk.
		d.BootFile = profile.MachineURL(s.bootURL, m.Metadata.Name) + "/boot.ipxe"
		return d
	}
	_, fw := firmwareOf(req)
	switch {
	case fw == "bios":
		d.BootFile = "undionly.kpxe"
	case fw == "uefi" && (req.Arch == 7 || req.Arch == 9):
		d.BootFile = s.cfg.UEFIBinary
	case !req.HasArch:
		// No option 93: not a PXE client (an OS asking for an address).
		return d
	default:
		s.event(m.Metadata.Name, api.EventWarning, "DHCPUnsupportedArch", "client architecture %d has no iPXE binary here", req.Arch)
		return d
	}
	return d
}

// Observe puts each DHCP step on the machine's timeline.
func (s *Service) Observe(ctx context.Context, ev dhcp.Event) {
	s.metrics.observeDHCP(ev)
	name := machineName(ev.Request.MAC.String())
	if m := s.machineByMAC(ev.Request.MAC.String()); m != nil {
		name = m.Metadata.Name
	}
	// Learn the machine's address, so its TFTP and HTTP requests land on
	// its timeline too: from our ACK in full mode; in proxy mode from the
	// address it asks the network's own DHCP server for, or already has.
	for _, ip := range []netip.Addr{ev.IP, ev.Request.RequestedIP, ev.Request.ClientIP} {
		if ip.IsValid() && !ip.IsUnspecified() && (ev.Reply == dhcp.MsgAck || ev.Proxy || s.cfg.DHCPMode == dhcp.ModeProxy) {
			s.mu.Lock()
			s.byIP[ip] = name
			s.mu.Unlock()
			break
		}
	}
	what := fmt.Sprintf("DHCP %s", msgName(ev.Request.Type))
	if ev.Request.Port == 4011 {
		what += " (port 4011)"
	}
	client := "firmware"
	if ev.Request.IsIPXE {
		client = "iPXE"
	}
	switch {
	case ev.Reply == 0 && ev.Reason != "":
		s.event(name, api.EventWarning, "DHCP", "%s from %s: no answer (%s)", what, client, ev.Reason)
	case ev.Reply == 0:
		s.event(name, api.EventNormal, "DHCP", "%s from %s", what, client)
	default:
		msg := fmt.Sprintf("%s from %s → %s", what, client, msgName(ev.Reply))
		if ev.IP.IsValid() {
			msg += " " + ev.IP.String()
		}
		if ev.BootFile != "" {
			msg += ", boot " + ev.BootFile
		}
		if ev.Proxy {
			msg += " (proxy)"
		}
		s.event(name, api.EventNormal, "DHCP", "%s", msg)
	}
	if ev.Reply == dhcp.MsgAck {
		ip := ev.IP
		s.later(func(ctx context.Context) {
			now := time.Now().UTC()
			st := map[string]any{"lastSeen": now}
			if ip.IsValid() {
				st["addresses"] = []string{ip.String()}
			}
			_, _ = s.c.Patch(ctx, "Machine", "", name, map[string]any{"status": st}, true)
		})
	}
}

func msgName(t dhcp.MessageType) string {
	switch t {
	case dhcp.MsgDiscover:
		return "DISCOVER"
	case dhcp.MsgOffer:
		return "OFFER"
	case dhcp.MsgRequest:
		return "REQUEST"
	case dhcp.MsgAck:
		return "ACK"
	case dhcp.MsgNak:
		return "NAK"
	case dhcp.MsgRelease:
		return "RELEASE"
	case dhcp.MsgDecline:
		return "DECLINE"
	case dhcp.MsgInform:
		return "INFORM"
	}
	return fmt.Sprintf("type %d", t)
}

// tftpFiles serves the iPXE binaries by name. Debian's ipxe.efi is a
// symlink out of /usr/lib/ipxe, so the files are listed, not the folder.
func (s *Service) tftpFiles() tftp.Resolver {
	files := map[string]string{}
	for _, f := range []string{"undionly.kpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi"} {
		files[f] = filepath.Join(s.cfg.IPXEDir, f)
	}
	return tftp.Files(files)
}

func (s *Service) observeTFTP(ev tftp.Event) {
	s.metrics.observeTFTP(ev)
	s.mu.Lock()
	name := s.byIP[ev.Client.Addr()]
	s.mu.Unlock()
	if name == "" {
		return
	}
	switch ev.Kind {
	case tftp.EventCompleted:
		s.event(name, api.EventNormal, "TFTP", "sent %s (%d bytes in %s)", ev.Path, ev.Bytes, ev.Duration.Round(time.Millisecond))
	case tftp.EventError:
		s.event(name, api.EventWarning, "TFTP", "%s: %v", ev.Path, ev.Err)
	}
}

// routes is the HTTP side.
func (s *Service) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", s.serveEntry)
	mux.HandleFunc("GET /machines/{name}/boot.ipxe", s.serveScript)
	mux.HandleFunc("GET /machines/{name}/files/{file}", s.serveFile)
	mux.HandleFunc("POST /machines/{name}/report", s.serveReport)
	mux.HandleFunc("GET /artifacts/{id}/{file}", s.serveArtifact)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

// serveEntry is where boot media chain to: /boot.ipxe?mac=${net0/mac}.
func (s *Service) serveEntry(w http.ResponseWriter, r *http.Request) {
	mac := strings.ToLower(r.URL.Query().Get("mac"))
	if _, es := api.ValidateMAC("mac", mac); len(es) > 0 {
		http.Error(w, "#!ipxe\necho boot.ipxe needs ?mac=${net0/mac}\n", http.StatusBadRequest)
		return
	}
	hw, _ := net.ParseMAC(mac)
	m, err := s.discover(r.Context(), dhcp.Request{MAC: hw})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "#!ipxe\nchain %s/boot.ipxe\n", profile.MachineURL(s.bootURL, m.Metadata.Name))
}

// planFor works out a machine's next boot and the values its templates see.
func (s *Service) planFor(name string) (*api.Machine, *api.MachineProfile, profile.Values, error) {
	m := s.machine(name)
	if m == nil {
		return nil, nil, profile.Values{}, fmt.Errorf("no machine %q", name)
	}
	var profiles []*api.MachineProfile
	for _, o := range s.profiles.List() {
		profiles = append(profiles, o.(*api.MachineProfile))
	}
	p, _ := profile.Match(m, profiles)
	var site *api.Site
	if o, ok := s.sites.Get(m.Spec.Site); ok {
		site = o.(*api.Site)
	}
	if p != nil {
		p = s.withArtifacts(p)
	}
	v := profile.NewValues(m, p, site, profile.ServerValues{BootURL: s.bootURL, APIURL: s.c.Server()})
	var keys []*api.SSHKey
	for _, o := range s.keys.List() {
		keys = append(keys, o.(*api.SSHKey))
	}
	v.SSHKeys = profile.SelectSSHKeys(p, keys)
	v.Token = s.reportToken(m)
	return m, p, v, nil
}

// withArtifacts returns a copy of p whose kernels and initrds point at this
// service: iPXE fetches them over HTTP, and file:// or checksummed URLs are
// served from here, verified and cached.
func (s *Service) withArtifacts(p *api.MachineProfile) *api.MachineProfile {
	p = api.DeepCopy(p).(*api.MachineProfile)
	fix := func(f *api.BootFile) {
		if f == nil || f.URL == "" {
			return
		}
		sum := sha256.Sum256([]byte(f.URL + "\x00" + f.Checksum))
		id := hex.EncodeToString(sum[:8])
		s.mu.Lock()
		s.artifacts[id] = artifact{url: f.URL, checksum: f.Checksum}
		s.mu.Unlock()
		base := path.Base(f.URL)
		if u, err := url.Parse(f.URL); err == nil {
			base = path.Base(u.Path)
		}
		f.URL = s.bootURL + "/artifacts/" + id + "/" + url.PathEscape(base)
	}
	fixBoot := func(b *api.ProfileBoot) {
		fix(b.Kernel)
		for i := range b.Initrds {
			fix(&b.Initrds[i])
		}
	}
	fixBoot(&p.Spec.ProfileBoot)
	for arch, b := range p.Spec.Variants {
		fixBoot(&b)
		p.Spec.Variants[arch] = b
	}
	return p
}

func (s *Service) serveScript(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	m, p, v, err := s.planFor(name)
	if err != nil {
		http.Error(w, "#!ipxe\necho "+err.Error()+"\n", http.StatusNotFound)
		return
	}
	plan, err := profile.RenderBoot(m, p, v)
	if err != nil {
		s.event(name, api.EventWarning, "HTTP", "boot.ipxe: cannot render the profile: %v", err)
		plan = profile.WaitPlan(m, "cannot render the boot profile: "+err.Error(), v)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, profile.IPXEScript(plan))
	s.event(name, api.EventNormal, "HTTP", "boot.ipxe: %s (%s)", plan.Action, plan.Message)
	if plan.Action == profile.ActionBoot {
		// The profile's boot starts now: the machine controller moves an
		// approved machine to Provisioning on it, and a stateless machine
		// is Ready again only once this boot reports its host keys.
		stateless := p != nil && !p.Spec.Install
		s.later(func(ctx context.Context) {
			st := map[string]any{"lastBoot": time.Now().UTC()}
			if stateless {
				st["sshHostKeys"] = nil
			}
			if _, err := s.c.Patch(ctx, "Machine", "", name, map[string]any{"status": st}, true); err != nil {
				slog.Warn("recording a machine's boot", "machine", name, "err", err)
			}
		})
	}
}

func (s *Service) serveFile(w http.ResponseWriter, r *http.Request) {
	name, file := r.PathValue("name"), r.PathValue("file")
	_, p, v, err := s.planFor(name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	var body string
	found := false
	if p != nil {
		for _, f := range p.Spec.Files {
			if f.Name == file {
				if body, err = profile.Render(f.Template, v); err != nil {
					s.event(name, api.EventWarning, "HTTP", "file %s: %v", file, err)
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				if f.ContentType != "" {
					w.Header().Set("Content-Type", f.ContentType)
				}
				found = true
			}
		}
	}
	if !found && file == profile.MetadataFile {
		body, found = profile.MetaData(v), true
	}
	if !found {
		s.event(name, api.EventWarning, "HTTP", "file %s: not in the profile", file)
		http.NotFound(w, r)
		return
	}
	io.WriteString(w, body)
	s.event(name, api.EventNormal, "HTTP", "file %s (%d bytes)", file, len(body))
}

// serveArtifact serves a kernel, initrd or image, verified and cached,
// with Range requests.
func (s *Service) serveArtifact(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	a, ok := s.artifacts[id]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Fetching the artifact, then sending it to a slow firmware, takes
	// as long as it needs while each write goes through in time.
	w = serving.For(w, s.limits.WriteTimeout).Stream(w)
	p, _, err := s.images.Ensure(r.Context(), a.url, a.checksum, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, _ := f.Stat()
	http.ServeContent(w, r, r.PathValue("file"), fi.ModTime(), f)
	if ip, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		s.mu.Lock()
		name := s.byIP[ip.Addr()]
		s.mu.Unlock()
		if name != "" {
			s.event(name, api.EventNormal, "HTTP", "artifact %s (%d bytes)", r.PathValue("file"), fi.Size())
		}
	}
}

// Report is what a booted machine tells the service.
type Report struct {
	IPs         []string `json:"ips"`
	Hostname    string   `json:"hostname"`
	SSHHostKeys []string `json:"sshHostKeys"`
	// Result is "ok" when an installer finished (or a stateless boot
	// came up); anything else is a failure, described by Message.
	Result  string `json:"result"`
	Message string `json:"message"`
}

// serveReport takes a machine's report: JSON, or a form with ip,
// hostname, ssh_host_key (repeatable), result and message.
func (s *Service) serveReport(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	m := s.machine(name)
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok == "" {
		tok = r.URL.Query().Get("token")
	}
	if m == nil || tok == "" || tok != s.reportToken(m) {
		http.Error(w, "unknown machine or bad token", http.StatusForbidden)
		return
	}
	var rep Report
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rep); err != nil {
			http.Error(w, "report: "+err.Error(), http.StatusBadRequest)
			return
		}
	} else {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "report: "+err.Error(), http.StatusBadRequest)
			return
		}
		rep = Report{IPs: r.Form["ip"], Hostname: r.Form.Get("hostname"), SSHHostKeys: r.Form["ssh_host_key"],
			Result: r.Form.Get("result"), Message: r.Form.Get("message")}
	}
	_, p, _, _ := s.planFor(name)
	now := time.Now().UTC()
	st := map[string]any{"lastSeen": now}
	if len(rep.IPs) > 0 {
		st["addresses"] = rep.IPs
	}
	if len(rep.SSHHostKeys) > 0 {
		st["sshHostKeys"] = rep.SSHHostKeys
	}
	ok := rep.Result == "" || rep.Result == "ok"
	if ok && p != nil && p.Spec.Install {
		st["installedAt"] = now
	}
	if _, err := s.c.Patch(r.Context(), "Machine", "", name, map[string]any{"status": st}, true); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if ok {
		s.rec.Eventf(r.Context(), m, api.EventNormal, "Report", "reported back: ips %v, %d SSH host keys, result ok", rep.IPs, len(rep.SSHHostKeys))
	} else {
		s.rec.Eventf(r.Context(), m, api.EventWarning, "Report", "reported failure %q: %s", rep.Result, rep.Message)
	}
	io.WriteString(w, "ok\n")
}
