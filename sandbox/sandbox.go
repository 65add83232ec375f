package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/atomicfile"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/netns"
	"hearth.dev/hearth/testguest"
)

// Sandbox is a sandbox being built. Its steps run in this order: New,
// BuildNetwork, StartServer, StartAgents, StartBootService,
// BuildTestGuest, PublishTestGuest, BuildDebianImage, PublishDebianImage,
// WaitReady (Up runs them all). Each
// records what it made before going on, so Down can remove a sandbox
// stopped at any step.
type Sandbox struct {
	cfg   Config
	names names
	// storage is the shared storage's servers starting (StartStorage).
	storage *storageStart
	// State is what has been made so far.
	State State
}

// Up builds a whole sandbox: the network, the server, an agent per host,
// the boot service, the test guest, and waits until every Host is Ready.
// When a step fails, what was made stays (its logs explain the failure)
// and the error says which step failed and to run Down.
func Up(ctx context.Context, cfg Config) (*Sandbox, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	// Machines are added once Up is done, not while it writes the record.
	unlock, err := lockState(ctx, s.cfg.Dir)
	if err != nil {
		return s, err
	}
	defer unlock()
	steps := []struct {
		what string
		run  func(context.Context) error
		skip bool
	}{
		{what: "building the underlay, " + plural(s.cfg.Hosts, "host namespace") + " and the provisioning network", run: func(context.Context) error { return s.BuildNetwork() }},
		{what: "starting the server", run: s.StartServer},
		{what: "starting the internet's HTTP server and making the external network " + ExternalNetworkName, run: s.StartInternet},
		{what: "starting Ceph and NFS in " + s.names.storage() + " (in the background)", run: s.StartStorage, skip: !s.cfg.SharedStorage},
		{what: "starting " + plural(s.cfg.Hosts, "agent"), run: s.StartAgents},
		{what: "starting the home router (dnsmasq)", run: s.StartHomeRouter, skip: !s.cfg.HomeRouter},
		{what: "starting the boot service", run: s.StartBootService, skip: !s.cfg.BootService},
		{what: "building the test guest", run: s.BuildTestGuest, skip: !s.cfg.TestGuest},
		{what: "making the test guest's shared images " + GuestKernelImage + " and " + GuestInitrdImage, run: s.PublishTestGuest, skip: !s.cfg.TestGuest},
		{what: "building the Debian image with cloud-init (minutes the first time, from the Debian mirror; cached after)", run: s.BuildDebianImage, skip: !s.cfg.DebianImage},
		{what: "making the Debian image's shared images " + DebianKernelImage + ", " + DebianInitrdImage + " and " + DebianDiskImage, run: s.PublishDebianImage, skip: !s.cfg.DebianImage},
		{what: "waiting for Ceph and NFS, and making the storage pools " + PoolCeph + " and " + PoolNFS, run: s.MakeStoragePools, skip: !s.cfg.SharedStorage},
		{what: "waiting for every host to be Ready", run: s.WaitReady},
	}
	for _, step := range steps {
		if step.skip {
			continue
		}
		fmt.Fprintf(s.cfg.Progress, "sandbox: %s\n", step.what)
		if err := step.run(ctx); err != nil {
			return s, fmt.Errorf("sandbox up failed %s: %w\n\nWhat was built is recorded in %s and stays for you to look at; remove it with: %s",
				step.what, err, statePath(s.cfg.Dir), s.downCommand())
		}
	}
	return s, nil
}

// New checks that no sandbox is up in cfg.Dir or under cfg.Prefix, and
// starts the record of a new one.
func New(cfg Config) (*Sandbox, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the sandbox makes network namespaces and links: run it as root")
	}
	if err := checkOwner(cfg); err != nil {
		return nil, err
	}
	// What tests killed before their cleanup left behind goes first: it
	// may hold this sandbox's names.
	if err := Sweep(context.Background(), cfg.Progress); err != nil {
		fmt.Fprintf(cfg.Progress, "sandbox: %v\n", err)
	}
	s := &Sandbox{cfg: cfg, names: names(cfg.Prefix)}
	if _, err := os.Stat(statePath(cfg.Dir)); err == nil {
		return nil, fmt.Errorf("a sandbox is already up in %s; run %s", cfg.Dir, s.downCommand())
	}
	for _, p := range []string{serverSubdir, serverLog} {
		if _, err := os.Stat(filepath.Join(cfg.Dir, p)); err == nil {
			return nil, fmt.Errorf("a sandbox is already up in %s (%s exists); run %s", cfg.Dir, p, s.downCommand())
		}
	}
	if ns := namespacesNamed(s.names); len(ns) > 0 {
		return nil, fmt.Errorf("a sandbox is already up with prefix %q (network namespace %s exists); run %s", cfg.Prefix, ns[0], s.downCommand())
	}
	if _, err := netlink.LinkByName(s.names.ctl()); err == nil {
		return nil, fmt.Errorf("a sandbox is already up with prefix %q (link %s exists); run %s", cfg.Prefix, s.names.ctl(), s.downCommand())
	}
	if err := checkUnderlayFree(cfg.Underlay); err != nil {
		return nil, err
	}
	st := State{Dir: cfg.Dir, Prefix: cfg.Prefix, Underlay: cfg.Underlay.String()}
	if _, err := os.Stat(cfg.Dir); errors.Is(err, os.ErrNotExist) {
		st.CreatedDir = true
	}
	if cfg.OwnerPID != 0 {
		if err := recordOwner(cfg); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("--dir: %w", err)
	}
	s.State = st
	if err := s.State.save(); err != nil {
		return nil, err
	}
	return s, nil
}

// downCommand is the command that removes this sandbox.
func (s *Sandbox) downCommand() string {
	cmd := "hearth sandbox down" + s.dirFlag()
	if s.cfg.Prefix != DefaultPrefix {
		cmd += " --prefix " + s.cfg.Prefix
	}
	return cmd
}

// dirFlag is " --dir DIR", or "" for the default directory.
func (s *Sandbox) dirFlag() string {
	if s.cfg.Dir != DefaultDir {
		return " --dir " + s.cfg.Dir
	}
	return ""
}

// Executable is the hearth binary the sandbox runs.
func (s *Sandbox) Executable() string { return s.cfg.Executable }

// Command returns a command that runs argv inside a namespace of the
// sandbox (a host's, or the underlay's).
func (s *Sandbox) Command(netnsName string, argv ...string) *exec.Cmd {
	return Command(s.cfg.Executable, netnsName, argv...)
}

// addPath records a file or directory made under Dir.
func (s *Sandbox) addPath(p string) error { return s.State.addPath(p) }

// serverHostPort is where the server listens: .1 of the underlay.
func (s *Sandbox) serverHostPort() string {
	return net.JoinHostPort(addrAt(s.cfg.Underlay, ctlOffset).String(), strconv.Itoa(s.cfg.Port))
}

// StartServer starts `hearth server` in the root namespace, listening on
// the underlay's .1, and waits until it answers with its admin config.
func (s *Sandbox) StartServer(ctx context.Context) error {
	dataDir := filepath.Join(s.cfg.Dir, serverSubdir)
	logPath := filepath.Join(s.cfg.Dir, serverLog)
	if err := s.addPath(dataDir); err != nil {
		return err
	}
	if err := s.addPath(logPath); err != nil {
		return err
	}
	argv := []string{s.cfg.Executable, "server",
		"--data-dir", dataDir,
		"--listen", s.serverHostPort(),
		// Port 0 lets etcd pick a free peer port, so a sandbox never
		// collides with an etcd or another server already on the machine.
		"--etcd-peer-url", "https://127.0.0.1:0",
	}
	p, err := startDaemon(argv, logPath)
	if p != nil {
		s.State.Server = p
		if serr := s.State.save(); serr != nil {
			return serr
		}
	}
	if err != nil {
		return err
	}
	s.State.ServerURL = "https://" + s.serverHostPort()
	s.State.AdminConfig = filepath.Join(dataDir, "admin.conf")
	if err := s.State.save(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	for {
		if !p.alive() {
			return fmt.Errorf("the server exited; the end of %s:\n%s", logPath, logTail(logPath, 15))
		}
		c, err := s.Client()
		if err == nil {
			_, err = c.WhoAmI(wctx)
		}
		if err == nil {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("the server did not answer at %s within %s (last error: %v); see %s", s.State.ServerURL, s.cfg.ReadyTimeout, err, logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Client returns an admin client of the sandbox's server.
func (s *Sandbox) Client() (*client.Client, error) {
	if s.State.AdminConfig == "" {
		return nil, errors.New("the sandbox has no server yet")
	}
	if _, err := os.Stat(s.State.AdminConfig); err != nil {
		return nil, err
	}
	return client.FromConfig(s.State.AdminConfig, "")
}

// joinTokenFile makes a single-use join token for the sandbox's site and
// writes it to a file only root reads, in dir: agents and the boot
// service read it from there, out of sight of ps. It returns the file.
func (s *Sandbox) joinTokenFile(ctx context.Context, dir, description string) (string, error) {
	c, err := s.Client()
	if err != nil {
		return "", err
	}
	resp, err := c.CreateToken(ctx, client.JoinTokens(), api.TokenRequest{TTL: "1h", Site: s.cfg.Site, Description: description})
	if err != nil {
		return "", fmt.Errorf("making a join token: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "join-token")
	if err := atomicfile.Write(path, []byte(resp.Token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the join token: %w", err)
	}
	return path, nil
}

// StartAgents starts each host's agent inside the host's namespace, each
// with a join token of its own.
func (s *Sandbox) StartAgents(ctx context.Context) error {
	for i := range s.State.Hosts {
		h := &s.State.Hosts[i]
		// A firewall in the root namespace could drop the hosts' packets
		// to the server; say so here rather than in every agent's log.
		if err := s.dialFrom(h.Netns, s.serverHostPort()); err != nil {
			return fmt.Errorf("host %s cannot reach the server at %s (%v): does a firewall in the root namespace drop traffic on %s?", h.Name, s.serverHostPort(), err, s.names.ctl())
		}
		if err := os.MkdirAll(h.Dir, 0o755); err != nil {
			return err
		}
		if err := s.addPath(h.Dir); err != nil {
			return err
		}
		tokenFile, err := s.joinTokenFile(ctx, h.Dir, "hearth sandbox host "+h.Name)
		if err != nil {
			return fmt.Errorf("agent of %s: %w", h.Name, err)
		}
		j := Join{
			Server:    s.State.ServerURL,
			TokenFile: tokenFile,
			CAFile:    filepath.Join(s.cfg.Dir, serverSubdir, "ca.crt"),
			Site:      s.cfg.Site,
			FileDirs:  s.fileDirs(),
		}
		argv := s.Command(h.Netns, s.cfg.AgentCommand(*h, j)...).Args
		p, err := startDaemon(argv, h.Log())
		if p != nil {
			h.Agent = p
			if serr := s.State.save(); serr != nil {
				return serr
			}
		}
		if err != nil {
			return fmt.Errorf("agent of %s: %w", h.Name, err)
		}
	}
	return nil
}

// dialFrom connects to addr from inside a namespace.
func (s *Sandbox) dialFrom(netnsName, addr string) error {
	return netns.DoNamed(netnsName, func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// fileDirs are the directories whose files the sandbox's shared Images
// and profiles name (file://): the test guest's, when it builds one.
func (s *Sandbox) fileDirs() []string {
	var dirs []string
	if s.cfg.TestGuest {
		dirs = append(dirs, filepath.Join(s.cfg.Dir, guestSubdir))
	}
	if s.cfg.DebianImage {
		dirs = append(dirs, filepath.Join(s.cfg.Dir, debianSubdir))
	}
	return dirs
}

// The shared Images of the test guest, which VMs boot by name
// (spec.boot.kernel.image).
const (
	GuestKernelImage = "testguest-kernel"
	GuestInitrdImage = "testguest-initrd"
	// GuestDiskImage is a disk that boots the test guest (BIOS, from a
	// hybrid ISO), made with --shared-storage for volumes to clone.
	GuestDiskImage = "testguest-disk"
)

// BuildTestGuest builds the test guest (a small kernel and initramfs VMs
// boot in a couple of seconds) and links it into DIR/testguest, where
// PublishTestGuest's images and the examples' profiles find it.
func (s *Sandbox) BuildTestGuest(ctx context.Context) error {
	kernel, initrd, err := buildTestGuest(ctx)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.cfg.Dir, guestSubdir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := s.addPath(dir); err != nil {
		return err
	}
	g := &Guest{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")}
	if err := linkOrCopy(kernel, g.Kernel); err != nil {
		return err
	}
	if err := linkOrCopy(initrd, g.Initrd); err != nil {
		return err
	}
	if s.cfg.SharedStorage {
		// A disk that boots the guest, for volumes cloned from an image
		// in the shared pools (examples/sandbox/shared-storage.yaml).
		disk, err := testguest.BootDisk(ctx, testguest.Guest{Kernel: g.Kernel, Initrd: g.Initrd}, dir)
		if err != nil {
			return fmt.Errorf("the test guest's boot disk: %w", err)
		}
		g.Disk = disk
	}
	s.State.TestGuest = g
	return s.State.save()
}

// PublishTestGuest makes the test guest the shared Images
// testguest-kernel and testguest-initrd: file:// URLs into DIR/testguest
// (which the agents are started to allow) with the files' checksums. VMs
// boot it by naming them, since a VM cannot name a host's file itself.
func (s *Sandbox) PublishTestGuest(ctx context.Context) error {
	g := s.State.TestGuest
	if g == nil {
		return errors.New("the test guest is not built yet")
	}
	c, err := s.Client()
	if err != nil {
		return err
	}
	images := map[string]string{GuestKernelImage: g.Kernel, GuestInitrdImage: g.Initrd}
	if g.Disk != "" {
		images[GuestDiskImage] = g.Disk
	}
	for name, path := range images {
		if err := sharedFileImage(ctx, c, name, path, api.FormatRaw, "the sandbox's test guest"); err != nil {
			return err
		}
	}
	g.KernelImage, g.InitrdImage = GuestKernelImage, GuestInitrdImage
	if g.Disk != "" {
		g.DiskImage = GuestDiskImage
	}
	return s.State.save()
}

// sharedFileImage makes (or, for a rebuilt file, replaces) the shared
// Image name of the file at path, in format, described as what.
func sharedFileImage(ctx context.Context, c *client.Client, name, path, format, what string) error {
	sum, err := fileChecksum(path)
	if err != nil {
		return err
	}
	img := &api.Image{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Image"},
		Metadata: api.ObjectMeta{Name: name, Labels: map[string]string{"hearth.dev/sandbox": "testguest"}},
		Spec: api.ImageSpec{Description: what + " (" + filepath.Base(path) + ")", Format: format,
			Source: api.ImageSource{URL: "file://" + path, Checksum: sum}}}
	if o, err := c.Get(ctx, "Image", "", name); err == nil {
		if o.(*api.Image).Spec.Source == img.Spec.Source {
			return nil
		}
		// An image's content cannot change: a new build is a new Image.
		if _, err := c.Delete(ctx, "Image", "", name); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("replacing the shared image %s: %w", name, err)
		}
	}
	if _, err := c.Create(ctx, img); err != nil {
		return fmt.Errorf("making the shared image %s of %s: %w", name, path, err)
	}
	return nil
}

// fileChecksum is a file's "sha256:…".
func fileChecksum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// linkOrCopy hard-links src to dst, or copies it when they are on
// different file systems.
func linkOrCopy(src, dst string) error {
	_ = os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst+".tmp", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// WaitReady waits until every host's Host is Ready. An agent that exits
// fails the wait at once, with the end of its log.
func (s *Sandbox) WaitReady(ctx context.Context) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	for {
		var notReady []Host
		for _, h := range s.State.Hosts {
			if h.Agent != nil && !h.Agent.alive() {
				return fmt.Errorf("the agent of %s exited; the end of %s:\n%s", h.Name, h.Log(), logTail(h.Log(), 15))
			}
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			obj, err := c.Get(qctx, "Host", "", h.Name)
			cancel()
			if err != nil || obj.CommonStatus().Phase != api.HostReady {
				notReady = append(notReady, h)
			}
		}
		if len(notReady) == 0 {
			return nil
		}
		if !s.State.Server.alive() {
			return fmt.Errorf("the server exited; the end of %s:\n%s", s.State.Server.Log, logTail(s.State.Server.Log, 15))
		}
		if time.Now().After(deadline) {
			var names, logs []string
			for _, h := range notReady {
				names = append(names, h.Name)
				logs = append(logs, h.Log())
			}
			return fmt.Errorf("%s did not become Ready within %s; see %s",
				strings.Join(names, ", "), s.cfg.ReadyTimeout, strings.Join(logs, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// PrintSummary writes what is up as shell comments, then, as the last
// line, the export that points the CLI at the sandbox: the output of `up`
// can be given to eval.
func (s *Sandbox) PrintSummary(w io.Writer) {
	fmt.Fprintf(w, "# Hearth sandbox up in %s\n", s.cfg.Dir)
	fmt.Fprintf(w, "# server  %s  log %s\n", s.State.ServerURL, s.State.Server.Log)
	for _, h := range s.State.Hosts {
		fmt.Fprintf(w, "# %-6s  %-15s  netns %s  log %s\n", h.Name, h.Address, h.Netns, h.Log())
	}
	if in := s.State.Internet; in != nil {
		fmt.Fprintf(w, "# internet  %s  netns %s, external network %s, %s answers %s\n", in.CIDR, in.Netns, ExternalNetworkName, in.URL(), InternetGreeting)
		if in.CIDR6 != "" {
			fmt.Fprintf(w, "# internet  %s  IPv6, the internet at %s; it routes %s to the hosts (delegate prefixes in it to tenants: spec.ipv6.prefixes)\n", in.CIDR6, in.Gateway6, in.Routed6)
		}
	}
	if p := s.State.Provisioning; p != nil {
		fmt.Fprintf(w, "# provisioning  %s  netns %s, bridge %s\n", p.CIDR, p.Netns, p.Bridge)
		if r := p.Router; r != nil {
			fmt.Fprintf(w, "# home router  %s  %s\n", r.Address, routerStatus(r))
		}
		fmt.Fprintf(w, "# boot service  %s  %s\n", p.BootAddress, bootStatus(p))
		fmt.Fprintf(w, "# a machine that network-boots: hearth sandbox machine add NAME [--uefi]%s\n", s.dirFlag())
	}
	if st := s.State.Storage; st != nil {
		ceph, nfs := storageStatus(st)
		fmt.Fprintf(w, "# storage  %s  netns %s, pools %s (rbd) and %s (nfs)\n", st.Address, st.Netns, PoolCeph, PoolNFS)
		fmt.Fprintf(w, "#   ceph  %s\n#   nfs   %s\n", ceph, nfs)
	}
	if g := s.State.TestGuest; g != nil {
		fmt.Fprintf(w, "# test guest  shared images %s (file://%s)\n", strings.Join(g.images(), ", "), filepath.Dir(g.Kernel))
	}
	if d := s.State.DebianImage; d != nil {
		fmt.Fprintf(w, "# Debian image with cloud-init  shared images %s, %s, %s (file://%s); boot it with cmdline %q\n",
			d.KernelImage, d.InitrdImage, d.DiskImage, filepath.Dir(d.Disk), DebianCmdline)
	}
	fmt.Fprintf(w, "# a shell on %s: hearth sandbox exec-in %s -- bash;  tear down: %s\n", s.State.Hosts[0].Name, s.State.Hosts[0].Netns, s.downCommand())
	fmt.Fprintf(w, "export HEARTH_CONFIG=%s\n", s.State.AdminConfig)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "s") {
		return strconv.Itoa(n) + " " + what + "es"
	}
	return strconv.Itoa(n) + " " + what + "s"
}
