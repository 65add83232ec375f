package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	"slices"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/boot/profile"
	"hearth.dev/hearth/boot/tftp"
	"hearth.dev/hearth/dhcp"
	"hearth.dev/hearth/serving"
)

// Decide answers one DHCP request: what the machine boots next.
func (s *Service) Decide(ctx context.Context, req dhcp.Request) dhcp.Decision {
	m := s.machineByMAC(req.MAC.String())
	if m == nil {
		if !isBootClient(req) {
			// An operating system asking for an address (full mode):
			// it gets one, and is not a machine to boot.
			return dhcp.Decision{}
		}
		var err error
		m, err = s.discover(ctx, req.MAC, "mac:"+strings.ToLower(req.MAC.String()), factsOf(req))
		if err != nil {
			if !errors.Is(err, errRateLimited) && !errors.Is(err, errCapReached) {
				slog.Warn("discovering a machine", "mac", req.MAC.String(), "err", err)
			}
			// Firmware asks again, and may be discovered then.
			return dhcp.Decision{Ignore: true}
		}
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

// Observe puts each DHCP step of a known machine on its timeline. Other
// clients' packets are neither recorded nor remembered.
func (s *Service) Observe(ctx context.Context, ev dhcp.Event) {
	s.metrics.observeDHCP(ev)
	m := s.machineByMAC(ev.Request.MAC.String())
	if m == nil {
		return
	}
	name := m.Metadata.Name
	// Learn the machine's address, so its TFTP and HTTP requests land on
	// its timeline too and its boot is served to it alone: from our ACK
	// in full mode; in proxy mode from the address it asks the network's
	// own DHCP server for, or already has.
	for _, ip := range []netip.Addr{ev.IP, ev.Request.RequestedIP, ev.Request.ClientIP} {
		if ip.IsValid() && !ip.IsUnspecified() && (ev.Reply == dhcp.MsgAck || ev.Proxy || s.cfg.DHCPMode == dhcp.ModeProxy) {
			s.learn(name, m.Spec.MAC, ip)
			break
		}
	}
	what := fmt.Sprintf("DHCP %s", ev.Request.Type)
	if ev.Request.Port == 4011 {
		what += " (port 4011)"
	}
	// Who asks: the firmware's PXE, iPXE, or (no PXE options) the system
	// the machine booted, whose DHCP is on the timeline too.
	client := "firmware"
	switch {
	case ev.Request.IsIPXE:
		client = "iPXE"
	case !isBootClient(ev.Request):
		client = "the booted system"
	}
	switch {
	case ev.Reply == 0 && ev.Reason != "":
		s.event(name, api.EventWarning, "DHCP", "%s from %s: no answer (%s)", what, client, ev.Reason)
	case ev.Reply == 0:
		s.event(name, api.EventNormal, "DHCP", "%s from %s", what, client)
	default:
		msg := fmt.Sprintf("%s from %s → %s", what, client, ev.Reply)
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
	if facts, ok := newFirmwareFacts(m, ev.Request); ev.Reply != 0 && ok {
		s.later(func(ctx context.Context) {
			_, _ = s.c.PatchStatus(ctx, "Machine", "", name, facts)
		})
	}
	if ev.Reply == dhcp.MsgAck {
		// A new address is written at once; the same one again (a
		// renewal, firmware that asks over and over) only refreshes
		// lastSeen now and then (touch), not at every packet.
		m := s.machine(name)
		if !ev.IP.IsValid() || (m != nil && slices.Equal(m.Status.Addresses, []string{ev.IP.String()})) {
			if m != nil {
				s.touch(m)
			}
			return
		}
		now := time.Now().UTC()
		s.mu.Lock()
		s.seen[name] = now
		s.mu.Unlock()
		facts := api.MachineFacts{LastSeen: &now, Addresses: []string{ev.IP.String()}}
		s.later(func(ctx context.Context) {
			_, _ = s.c.PatchStatus(ctx, "Machine", "", name, facts)
		})
	}
}

// newFirmwareFacts are what a boot client's request says about the
// machine's firmware (status.firmware, uuid and vendorClass) that its
// status does not say yet: discovery records them, but a machine a
// person declared up front was never discovered, so its first boot
// fills them in. A field once set is never rewritten, as after
// discovery: anyone on the provisioning network can send DHCP in a known
// machine's name (the MAC is in the packet), and must not change what
// the power drivers read (status.firmware picks a BMC's boot option). An
// operating system's DHCP client says nothing here.
func newFirmwareFacts(m *api.Machine, req dhcp.Request) (api.MachineFacts, bool) {
	var facts api.MachineFacts
	if !isBootClient(req) {
		return facts, false
	}
	f := factsOf(req)
	for _, x := range []struct {
		set       *string
		have, got string
	}{
		{&facts.Firmware, m.Status.Firmware, f.firmware},
		{&facts.UUID, m.Status.UUID, f.uuid},
		{&facts.VendorClass, m.Status.VendorClass, f.vendorClass},
	} {
		if x.got != "" && x.have == "" {
			*x.set = x.got
		}
	}
	return facts, facts.Firmware != "" || facts.UUID != "" || facts.VendorClass != ""
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

// Limits of the Warning events refused requests record on a machine's
// timeline: a few at once, then one every warningInterval (repeats of one
// message bump its count).
const (
	warningBurst    = 5
	warningInterval = 30 * time.Second
	// seenInterval is how often a waiting machine's script requests
	// write its status.lastSeen, which keeps the machines controller from
	// collecting it as stale.
	seenInterval = 10 * time.Minute
)

// routes is the HTTP side. The files, artifacts and report of a boot
// live under the boot (profile.BootURL); the paths before boots existed
// answer with what changed.
func (s *Service) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", s.serveEntry)
	mux.HandleFunc("GET /machines/{name}/boot.ipxe", s.serveScript)
	mux.HandleFunc("GET /machines/{name}/boots/{boot}/files/{file}", s.serveFile)
	mux.HandleFunc("GET /machines/{name}/boots/{boot}/artifacts/{id}/{file}", s.serveArtifact)
	mux.HandleFunc("POST /machines/{name}/boots/{boot}/report", s.serveReport)
	mux.HandleFunc("GET /machines/{name}/files/{file}", s.serveMoved)
	mux.HandleFunc("POST /machines/{name}/report", s.serveMoved)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

func (s *Service) serveMoved(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "a machine's files and report are served only within a boot this service issued, under "+
		"/machines/NAME/boots/BOOT/ (the URLs its boot script carries: .URLs.FilesBase and .URLs.Report); network-boot the machine again", http.StatusNotFound)
}

// ipxeError answers with a status and a script that says why, which iPXE
// prints when it runs it, or shows as an error when the status fails it.
func ipxeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "#!ipxe\necho %s\n", profile.EchoText("Hearth: "+msg))
}

// serveEntry is where boot media chain to: /boot.ipxe?mac=${net0/mac}.
// A known MAC is sent to its machine's script; an unknown one is
// discovered only under the rules of discovery.go.
func (s *Service) serveEntry(w http.ResponseWriter, r *http.Request) {
	hw, err := parseEntryQuery(r.URL.RawQuery)
	if err != nil {
		ipxeError(w, http.StatusBadRequest, "boot.ipxe needs ?mac=${net0/mac}: "+err.Error())
		return
	}
	m := s.machineByMAC(hw.String())
	if m == nil {
		addr := remoteAddr(r)
		if why := s.mayDiscoverHTTP(r, hw, addr); why != "" {
			s.refused("entry", "refused to discover a machine over HTTP", "mac", hw.String(), "from", addr, "why", why)
			ipxeError(w, http.StatusForbidden, fmt.Sprintf("not discovering %s: %s", hw, why))
			return
		}
		m, err = s.discover(r.Context(), hw, "addr:"+addr.String(), discoveryFacts{via: "HTTP"})
		switch {
		case errors.Is(err, errRateLimited):
			w.Header().Set("Retry-After", fmt.Sprint(int(sourceInterval/time.Second)))
			ipxeError(w, http.StatusTooManyRequests, err.Error())
			return
		case errors.Is(err, errCapReached):
			w.Header().Set("Retry-After", "60")
			ipxeError(w, http.StatusServiceUnavailable, err.Error())
			return
		case err != nil:
			slog.Warn("discovering a machine", "mac", hw.String(), "err", err)
			ipxeError(w, http.StatusServiceUnavailable, "cannot discover "+hw.String()+" now")
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "#!ipxe\nchain %s/boot.ipxe\n", profile.MachineURL(s.bootURL, m.Metadata.Name))
}

// mayDiscoverHTTP says why a /boot.ipxe request from addr may not
// discover mac, or "": only iPXE discovers over HTTP, only its own MAC
// (as the neighbour table shows it, where it can), and in full DHCP mode
// only from the address this service leased to that MAC.
func (s *Service) mayDiscoverHTTP(r *http.Request, hw net.HardwareAddr, addr netip.Addr) string {
	if !strings.HasPrefix(r.UserAgent(), "iPXE/") {
		return "only iPXE discovers machines over HTTP"
	}
	if s.cfg.DHCPMode == dhcp.ModeFull && s.dhcp != nil {
		l, ok := s.dhcp.LeaseOf(hw)
		switch {
		case !ok:
			return "this service leased it no address"
		case l.IP != addr:
			return fmt.Sprintf("it asked from %s, not from %s, the address this service leased it", addr, l.IP)
		}
	}
	return s.checkLink(addr, hw.String())
}

// profileOf is the profile machine m boots (nil while it has none) and
// its site (nil when it has none or it is unknown).
func (s *Service) profileOf(m *api.Machine) (*api.MachineProfile, *api.Site) {
	var profiles []*api.MachineProfile
	for _, o := range s.profiles.List() {
		profiles = append(profiles, o.(*api.MachineProfile))
	}
	p, _ := api.MatchProfile(m, profiles)
	var site *api.Site
	if o, ok := s.sites.Get(m.Spec.Site); ok {
		site = o.(*api.Site)
	}
	return p, site
}

// values are what m's templates see in the boot with id boot ("" for
// none): p's kernels and initrds then point at the boot's artifacts, and
// the token is the boot's.
func (s *Service) values(m *api.Machine, p *api.MachineProfile, site *api.Site, boot string) (*api.MachineProfile, profile.Values) {
	if p != nil && boot != "" {
		p, _ = s.withArtifacts(p, profile.BootURL(s.bootURL, m.Metadata.Name, boot))
	}
	v := profile.NewValues(m, p, site, profile.ServerValues{BootURL: s.bootURL, APIURL: s.c.Server()}, boot)
	var keys []*api.SSHKey
	for _, o := range s.keys.List() {
		keys = append(keys, o.(*api.SSHKey))
	}
	v.SSHKeys = profile.SelectSSHKeys(p, keys)
	if boot != "" {
		v.Token = s.reportToken(boot)
	}
	return p, v
}

// withArtifacts returns a copy of p whose kernels and initrds point at
// the boot at base, where this service serves them (iPXE fetches them
// over HTTP; file:// and checksummed URLs are verified and cached here),
// and the sources of those artifacts by id.
func (s *Service) withArtifacts(p *api.MachineProfile, base string) (*api.MachineProfile, map[string]artifact) {
	p = api.DeepCopy(p).(*api.MachineProfile)
	ids := map[string]artifact{}
	fix := func(f *api.BootFile) {
		if f == nil || f.URL == "" {
			return
		}
		sum := sha256.Sum256([]byte(f.URL + "\x00" + f.Checksum))
		id := hex.EncodeToString(sum[:8])
		ids[id] = artifact{url: f.URL, checksum: f.Checksum}
		name := path.Base(f.URL)
		if u, err := url.Parse(f.URL); err == nil {
			name = path.Base(u.Path)
		}
		f.URL = base + "/artifacts/" + id + "/" + url.PathEscape(name)
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
	return p, ids
}

type artifact struct{ url, checksum string }

// warn records a Warning on machine m's timeline, unless requests refused
// for the same kind of reason have recorded too many lately.
func (s *Service) warn(m *api.Machine, kind, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	slog.Info("refused", "machine", m.Metadata.Name, "reason", reason, "why", msg)
	if s.warnings.allow(m.Metadata.Name+"\x00"+kind, time.Now()) {
		s.event(m.Metadata.Name, api.EventWarning, reason, "%s", msg)
	}
}

// touch writes m's status.lastSeen, at most every seenInterval.
func (s *Service) touch(m *api.Machine) {
	name := m.Metadata.Name
	now := time.Now()
	s.mu.Lock()
	last, ok := s.seen[name]
	if !ok && m.Status.LastSeen != nil {
		last, ok = *m.Status.LastSeen, true
	}
	due := !ok || now.Sub(last) >= seenInterval
	if due {
		s.seen[name] = now
	}
	s.mu.Unlock()
	if due {
		seen := now.UTC()
		s.later(func(ctx context.Context) {
			_, _ = s.c.PatchStatus(ctx, "Machine", "", name, api.MachineFacts{LastSeen: &seen})
		})
	}
}

// serveScript serves a machine's iPXE script. One that boots the
// profile issues a boot, and goes only to the machine's own address
// (checkClient); another client asking gets a script that waits, runs
// DHCP again and asks again, so a machine the service did not recognise
// (its address was learned before a restart, say) recovers by itself.
func (s *Service) serveScript(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var m *api.Machine
	if parseMachineName(name) == nil {
		m = s.machine(name)
	}
	if m == nil {
		ipxeError(w, http.StatusNotFound, fmt.Sprintf("no machine %q", truncate(name)))
		return
	}
	p, site := s.profileOf(m)
	addr := remoteAddr(r)
	action, _ := profile.Next(m, p)
	why := s.checkClient(m, nil, addr)
	boot := ""
	if action == profile.ActionBoot {
		if why != "" {
			s.warn(m, "script", "HTTP", "boot.ipxe: refused to issue a boot to %s: %s", addr, why)
			_, v := s.values(m, p, site, "")
			plan := profile.WaitPlan(m, fmt.Sprintf("not booting machine %s from %s: %s", name, addr, why), v)
			plan.Renew = true
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, profile.IPXEScript(plan))
			return
		}
		boot = s.boots.issue(m, addr, time.Now()).ID
	}
	if why == "" {
		s.touch(m)
	}
	bp, v := s.values(m, p, site, boot)
	plan, err := profile.RenderBoot(m, bp, v)
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
		// The record waits in the update queue, behind other writes, and
		// a quick system may report before it is written: then its keys
		// are this boot's and stay (recordMu orders the two writes).
		stateless := p != nil && !p.Spec.Install
		now := time.Now().UTC()
		s.later(func(ctx context.Context) {
			s.recordMu.Lock()
			defer s.recordMu.Unlock()
			facts := api.MachineFacts{LastBoot: &now}
			if b, _ := s.boots.lookup(boot); stateless && b.Reported == nil {
				facts.SSHHostKeys = new([]string) // null: cleared
			}
			if _, err := s.c.PatchStatus(ctx, "Machine", "", name, facts); err != nil {
				slog.Warn("recording a machine's boot", "machine", name, "err", err)
			}
		})
	}
}

// bootOf finds the boot a file or artifact request names and checks that
// it may be served: the boot is the machine's current one, the machine
// is approved, and the request comes from the machine (checkClient).
// Otherwise it answers the request, records why on the machine's
// timeline (when the machine exists), and returns ok false.
func (s *Service) bootOf(w http.ResponseWriter, r *http.Request, what string) (m *api.Machine, p *api.MachineProfile, site *api.Site, b bootRecord, ok bool) {
	ref, err := parseBootRef(r.PathValue("name"), r.PathValue("boot"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if m = s.machine(ref.machine); m == nil {
		http.Error(w, fmt.Sprintf("no machine %q", ref.machine), http.StatusNotFound)
		return
	}
	addr := remoteAddr(r)
	refuse := func(code int, kind, why string) {
		s.warn(m, kind, "HTTP", "%s: refused to %s: %s", what, addr, why)
		http.Error(w, fmt.Sprintf("%s of machine %s: %s", what, m.Metadata.Name, why), code)
	}
	b, found := s.boots.lookup(ref.boot)
	if !found || b.Machine != m.Metadata.Name || b.UID != m.Metadata.UID {
		refuse(http.StatusNotFound, "boot", "not a boot this service issued to the machine, or not its latest (network-boot it again)")
		return
	}
	p, site = s.profileOf(m)
	if p == nil || !api.MachineMayBoot(m, p) {
		refuse(http.StatusForbidden, "approval", "the machine is not approved for a profile")
		return
	}
	if why := s.checkClient(m, &b, addr); why != "" {
		refuse(http.StatusForbidden, "address", why)
		return
	}
	return m, p, site, b, true
}

// serveFile serves one of the profile's rendered files (or the generated
// meta-data) within a boot.
func (s *Service) serveFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if err := parseFileName(file); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	m, p, site, b, ok := s.bootOf(w, r, "file "+file)
	if !ok {
		return
	}
	name := m.Metadata.Name
	p, v := s.values(m, p, site, b.ID)
	var body string
	found := false
	for _, f := range p.Spec.Files {
		if f.Name == file {
			var err error
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

// serveArtifact serves a kernel or initrd of the boot's profile, verified
// and cached, with Range requests.
func (s *Service) serveArtifact(w http.ResponseWriter, r *http.Request) {
	id, file := r.PathValue("id"), r.PathValue("file")
	if err := parseArtifact(id, file); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	m, p, _, b, ok := s.bootOf(w, r, "artifact "+file)
	if !ok {
		return
	}
	_, ids := s.withArtifacts(p, profile.BootURL(s.bootURL, m.Metadata.Name, b.ID))
	a, ok := ids[id]
	if !ok {
		http.Error(w, fmt.Sprintf("artifact %s is not one of profile %s's", id, p.Metadata.Name), http.StatusNotFound)
		return
	}
	// Fetching the artifact, then sending it to a slow firmware, takes
	// as long as it needs while each write goes through in time.
	w = serving.For(w, s.limits.WriteTimeout).Stream(w)
	path, _, err := s.images.Ensure(r.Context(), a.url, a.checksum, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, _ := f.Stat()
	http.ServeContent(w, r, file, fi.ModTime(), f)
	s.event(m.Metadata.Name, api.EventNormal, "HTTP", "artifact %s (%d bytes)", file, fi.Size())
}

// serveReport takes a boot's report (parseReport says what it holds)
// with the boot's token, once. Anything else is refused, changes
// nothing, and is a Warning on the machine's timeline.
func (s *Service) serveReport(w http.ResponseWriter, r *http.Request) {
	ref, err := parseBootRef(r.PathValue("name"), r.PathValue("boot"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	m := s.machine(ref.machine)
	if m == nil {
		http.Error(w, "unknown machine or bad token", http.StatusForbidden)
		return
	}
	name := m.Metadata.Name
	refuse := func(kind, why string) {
		s.warn(m, "report-"+kind, "ReportRefused", "refused a report from %s: %s", remoteAddr(r), why)
		http.Error(w, "report refused: "+why, http.StatusForbidden)
	}
	tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !bearer {
		tok = r.URL.Query().Get("token")
	}
	b, found := s.boots.lookup(ref.boot)
	switch {
	case !found || b.Machine != name || b.UID != m.Metadata.UID:
		refuse("boot", "it names no current boot of the machine (an ended boot's, another machine's, or one issued before the boot service lost its state)")
		return
	case tok == "":
		refuse("token", "it carries no token")
		return
	case !s.tokenMatches(b.ID, tok):
		refuse("token", "its token is not this boot's")
		return
	case b.Reported != nil:
		refuse("used", fmt.Sprintf("this boot's token was used already, at %s", b.Reported.Format(time.RFC3339)))
		return
	}
	rep, err := parseReport(r.Header.Get("Content-Type"), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.recordMu.Lock()
	defer s.recordMu.Unlock()
	now := time.Now()
	if !s.boots.spend(b.ID, now) {
		refuse("used", "this boot's token was used already")
		return
	}
	p, _ := s.profileOf(m)
	seen := now.UTC()
	facts := api.MachineFacts{LastSeen: &seen, Addresses: rep.IPs}
	if len(rep.SSHHostKeys) > 0 {
		facts.SSHHostKeys = &rep.SSHHostKeys
	}
	ok := rep.Result == "" || rep.Result == "ok"
	if ok && p != nil && p.Spec.Install {
		facts.InstalledAt = &seen
	}
	if _, err := s.c.PatchStatus(r.Context(), "Machine", "", name, facts); err != nil {
		s.boots.unspend(b.ID) // it may report again
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if ok {
		s.rec.Eventf(r.Context(), m, api.EventNormal, "Report", "reported back: ips %v, SSH host keys: %d, result ok", rep.IPs, len(rep.SSHHostKeys))
	} else {
		s.rec.Eventf(r.Context(), m, api.EventWarning, "Report", "reported failure %q: %s", rep.Result, rep.Message)
	}
	io.WriteString(w, "ok\n")
}
