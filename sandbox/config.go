// Package sandbox builds a whole Hearth lab on one Linux machine, so anyone
// can try Hearth without hardware and the end-to-end tests have real hosts
// to run on.
//
// A sandbox is a network namespace holding an underlay bridge, one network
// namespace per "host" plugged into that bridge, one veth that lets the
// root namespace (where the server and the CLI run) reach the hosts, a
// `hearth server` in the root namespace and a `hearth agent` inside each
// host's namespace. Everything it makes is recorded in DIR/sandbox.json, so
// Down removes exactly that; Down also works from the naming scheme alone
// when the record is missing.
//
// Bare metal is tried on a provisioning network, a second L2 that has
// nothing to do with the underlay:
//
//	root ns         PREFIX-underlay        PREFIX-boot              PREFIX-lan
//	PREFIX-ctl .1 ─ br0 ─ h1 … (hosts)
//	                    └─ boot ─ underlay .9 │ prov .2 ─ boot ─ prov0 ─ m-NAME (tap) ─ QEMU
//
// PREFIX-lan holds the bridge prov0, a tap per machine and the machines'
// QEMU processes (AddMachine). PREFIX-boot holds `hearth boot`: its
// interface prov (.2 of the provisioning CIDR) serves DHCP, TFTP and HTTP
// to the machines, and its interface underlay (.9 of the underlay) reaches
// the server at .1. PREFIX-boot does not forward, and nothing else has an
// address on the provisioning network, so a machine reaches the boot
// service and other machines, nothing more. The provisioning network gets
// a namespace of its own, rather than a second bridge beside br0, so the
// machines' QEMUs never share a namespace with the hosts' wiring, and Down
// finds them by that namespace.
//
// With Config.HomeRouter the provisioning network also gets what a real
// LAN has, a home router: a namespace PREFIX-router whose veth lan (.1,
// peer router on prov0) carries dnsmasq handing out .50 to .99 with no
// PXE options, and the boot service answers in proxy DHCP mode beside it.
// PREFIX-router does not forward either.
//
// With Config.SharedStorage the underlay also gets shared storage: a
// namespace PREFIX-storage whose veth underlay (.8; peer storage on br0)
// carries a single-node Ceph cluster and an NFS server (storage.go).
//
// Sandbox traffic never leaves the namespaces the sandbox made: nothing is
// bridged, routed or NATed to the machine's real interfaces (see
// connectRoot for why).
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults of `hearth sandbox up`. They are flags of the command; code
// paths take them from Config.
const (
	DefaultDir          = "/var/lib/hearth-sandbox"
	DefaultPrefix       = "hsb"
	DefaultUnderlayCIDR = "172.31.255.0/24"
	// DefaultProvisioningCIDR is the network machines network-boot on.
	DefaultProvisioningCIDR = "172.31.252.0/24"
	DefaultPort             = 8443
	DefaultSite             = "sandbox"
	DefaultReadyTimeout     = 120 * time.Second
)

// Names inside the underlay namespace and the host namespaces. They live
// in namespaces the sandbox made, so they cannot collide with anything.
const (
	bridgeName   = "br0"
	hostLinkName = "eth0"
	ctlPeerName  = "ctl"
	stateFile    = "sandbox.json"
	serverSubdir = "server"
	serverLog    = "server.log"
	agentLog     = "agent.log"
	guestSubdir  = "testguest"
	debianSubdir = "debian"

	// The provisioning network: the bridge in PREFIX-lan, the boot
	// service's two links in PREFIX-boot, and their peers' name in
	// PREFIX-lan and PREFIX-underlay.
	provBridgeName   = "prov0"
	bootProvLink     = "prov"
	bootUnderlayLink = "underlay"
	bootPortName     = "boot"
	bootSubdir       = "boot"
	bootLog          = "boot.log"
	machinesSubdir   = "machines"

	// The home router (--home-router): dnsmasq in PREFIX-router, its
	// link routerLink on prov0 through routerPortName in PREFIX-lan.
	routerLink     = "lan"
	routerPortName = "router"
	routerSubdir   = "router"
	routerLog      = "router.log"
	routerDNSMasq  = "dnsmasq.log"
	routerLeases   = "leases"
	routerPID      = "dnsmasq.pid"
	// DefaultDNSMasq is Debian's dnsmasq (package dnsmasq-base).
	DefaultDNSMasq = "/usr/sbin/dnsmasq"
)

// Config says what sandbox to build.
type Config struct {
	// Dir holds the server's data, each host's agent data, the logs and
	// sandbox.json.
	Dir string
	// Hosts is how many hosts (network namespaces with an agent) to make.
	Hosts int
	// Prefix starts the name of every namespace and root-side link the
	// sandbox makes (PREFIX-underlay, PREFIX-h1, PREFIX-ctl). Two
	// sandboxes on one machine need different prefixes and CIDRs.
	Prefix string
	// Underlay is the hosts' network. The root namespace gets .1, the
	// boot service .9 and host i .(10+i).
	Underlay netip.Prefix
	// Provisioning is the network machines network-boot on (at least a
	// /24): the boot service is .2, its DHCP pool .100 to .199.
	Provisioning netip.Prefix
	// External is the sandbox's internet (PREFIX-internet): the
	// ExternalNetwork "internet" that tenant networks route out to. Its
	// .1 is the internet's own address.
	External netip.Prefix
	// External6 is the internet's IPv6 link (a /64; ::1 is the
	// internet's), the ExternalNetwork's spec.ipv6.cidr; Routed6 is the
	// range the internet treats as on-link there, where the prefixes the
	// ExternalNetwork delegates to tenants must lie to be reached.
	External6, Routed6 netip.Prefix
	// Port is where the server listens on the underlay's .1.
	Port int
	// Site is the site every host joins.
	Site string
	// Executable is the hearth binary run as server, as agents and to
	// enter namespaces (default: this program).
	Executable string
	// AgentCommand returns the command that runs host h's agent (default:
	// DefaultAgentCommand). It runs inside h's namespace with its output
	// in h's agent.log.
	AgentCommand func(h Host, j Join) []string
	// BootService starts the boot service (BootCommand) in PREFIX-boot.
	// With the default command and a hearth binary that has no `boot`
	// command, Up says so and goes on without it.
	BootService bool
	// BootCommand returns the command that runs the boot service
	// (default: DefaultBootCommand). It runs inside PREFIX-boot with its
	// output in DIR/boot/boot.log, and must serve HTTP on
	// p.HTTPListen: Up waits for that.
	BootCommand func(p Provisioning, j Join) []string
	// HomeRouter starts dnsmasq as the provisioning network's home
	// router: in a namespace PREFIX-router at .1, handing out .50 to .99
	// with no PXE options at all. The boot service then runs in proxy
	// DHCP mode beside it instead of full mode.
	HomeRouter bool
	// DNSMasq is the dnsmasq binary of the home router (default
	// DefaultDNSMasq).
	DNSMasq string
	// TestGuest builds the test guest, links its kernel and initrd to
	// DIR/testguest/ and makes them the shared Images testguest-kernel
	// and testguest-initrd (file:// URLs the agents allow), so VMs can
	// boot them by name.
	TestGuest bool
	// DebianImage builds the Debian image with Debian's cloud-init
	// (testguest.BuildDebian: minutes and about 150 MB from the Debian
	// mirror the first time, cached after), links its kernel, initramfs
	// and disk to DIR/debian/ and makes them the shared Images
	// debian-kernel, debian-initrd and debian-disk, so VMs can boot a
	// real cloud image (examples/sandbox/cloudinit.yaml).
	DebianImage bool
	// SharedStorage starts a single-node Ceph cluster and an NFS server
	// in a namespace PREFIX-storage on the underlay (.8), which every
	// host reaches, and makes the StoragePools ceph (rbd) and nfs, so VMs
	// can run on shared storage and move between hosts (storage.go).
	SharedStorage bool
	// ReadyTimeout bounds the wait for the server and every Host to be
	// Ready.
	ReadyTimeout time.Duration
	// Progress receives one line per step (default: discarded).
	Progress io.Writer
	// OwnerPID, when set, is the process the sandbox belongs to (a
	// test): once it has exited, the next sandbox's New (or Sweep)
	// removes the sandbox, should its owner not have (sweep.go). 0 (a
	// person's sandbox) lives until Down.
	OwnerPID int
	// OwnerDir is a directory the owner made to hold Dir (Dir or one
	// above it): a sweep also removes the directories from Dir up to
	// OwnerDir that are left empty (a test's temporary directory).
	OwnerDir string

	// defaultBootCommand says BootCommand was left to the default, so a
	// binary without `boot` is a warning, not a failure.
	defaultBootCommand bool
}

// Join is what an agent needs to join the sandbox's cluster. The join
// token gives the Host its site.
type Join struct {
	// Server is the API's URL as the hosts reach it.
	Server string
	// TokenFile holds a single-use join token, readable by root only.
	TokenFile string
	// CAFile is the cluster CA certificate.
	CAFile string
	// Site is the site the host joins.
	Site string
	// FileDirs are the sandbox's directories of files that shared Images
	// and MachineProfiles name with file:// URLs (the test guest's):
	// agents and the boot service get them as --allow-file-dir.
	FileDirs []string
}

// allowFileDirs is FileDirs as the agent's and boot service's flags.
func (j Join) allowFileDirs() []string {
	var args []string
	for _, d := range j.FileDirs {
		args = append(args, "--allow-file-dir", d)
	}
	return args
}

// DefaultAgentCommand runs `hearth agent` for host h.
func DefaultAgentCommand(exe string) func(h Host, j Join) []string {
	return func(h Host, j Join) []string {
		return append([]string{exe, "agent",
			"--server", j.Server,
			"--join-token-file", j.TokenFile,
			"--ca-file", j.CAFile,
			"--name", h.Name,
			"--data-dir", h.Dir,
			"--address", h.Address,
			"--underlay-device", hostLinkName,
			"--external-interface", ExternalNetworkName + "=" + HostExternalBridge,
		}, append(metricsFlag(h.Metrics), j.allowFileDirs()...)...)
	}
}

// DefaultBootCommand runs `hearth boot` on the provisioning network, in
// full DHCP mode: it is the only DHCP server there; or, beside a home
// router (p.DHCPMode "proxy"), in proxy mode, without a pool. It gets no
// --router: nothing routes out of the provisioning network. Machines it
// discovers join the hosts' site.
func DefaultBootCommand(exe string) func(p Provisioning, j Join) []string {
	return func(p Provisioning, j Join) []string {
		if p.DHCPMode == "proxy" {
			return append([]string{exe, "boot",
				"--server", j.Server,
				"--join-token-file", j.TokenFile,
				"--ca-file", j.CAFile,
				"--name", "boot",
				"--data-dir", p.BootDir,
				"--interface", p.BootInterface,
				"--address", p.BootAddress,
				"--dhcp-mode", "proxy",
				"--http-listen", p.HTTPListen,
				"--site", j.Site,
			}, append(metricsFlag(p.BootMetrics), j.allowFileDirs()...)...)
		}
		return append([]string{exe, "boot",
			"--server", j.Server,
			"--join-token-file", j.TokenFile,
			"--ca-file", j.CAFile,
			"--name", "boot",
			"--data-dir", p.BootDir,
			"--interface", p.BootInterface,
			"--address", p.BootAddress,
			"--dhcp-mode", "full",
			"--pool-start", p.PoolStart,
			"--pool-end", p.PoolEnd,
			"--http-listen", p.HTTPListen,
			"--site", j.Site,
		}, append(metricsFlag(p.BootMetrics), j.allowFileDirs()...)...)
	}
}

// metricsFlag is --metrics-listen ADDR, or nothing for a sandbox made
// before the sandbox served metrics.
func metricsFlag(addr string) []string {
	if addr == "" {
		return nil
	}
	return []string{"--metrics-listen", addr}
}

// withDefaults fills what was left empty and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return c, fmt.Errorf("--dir: %w", err)
	}
	c.Dir = dir
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if err := validPrefix(c.Prefix); err != nil {
		return c, err
	}
	if !c.Underlay.IsValid() {
		c.Underlay = netip.MustParsePrefix(DefaultUnderlayCIDR)
	}
	if !c.Underlay.Addr().Is4() {
		return c, fmt.Errorf("--underlay-cidr %s: only IPv4 underlays are supported", c.Underlay)
	}
	c.Underlay = c.Underlay.Masked()
	if c.Hosts < 1 {
		return c, fmt.Errorf("--hosts %d: a sandbox needs at least one host", c.Hosts)
	}
	// Host i takes .(10+i); the last address of the prefix is broadcast.
	if last := hostOffset(c.Hosts); !offsetFits(c.Underlay, last) {
		return c, fmt.Errorf("--hosts %d does not fit in --underlay-cidr %s (host i takes address .%d+i): use fewer hosts or a larger prefix", c.Hosts, c.Underlay, hostOffset(0))
	}
	if !c.Provisioning.IsValid() {
		c.Provisioning = netip.MustParsePrefix(DefaultProvisioningCIDR)
	}
	if !c.Provisioning.Addr().Is4() {
		return c, fmt.Errorf("--provisioning-cidr %s: only IPv4 is supported", c.Provisioning)
	}
	c.Provisioning = c.Provisioning.Masked()
	if !offsetFits(c.Provisioning, poolEndOffset) {
		return c, fmt.Errorf("--provisioning-cidr %s is too small: the DHCP pool is .%d to .%d, so it needs a /24 or larger", c.Provisioning, poolStartOffset, poolEndOffset)
	}
	if c.Provisioning.Overlaps(c.Underlay) {
		return c, fmt.Errorf("--provisioning-cidr %s overlaps --underlay-cidr %s: the boot service sits on both, so they must differ", c.Provisioning, c.Underlay)
	}
	if !c.External.IsValid() {
		c.External = netip.MustParsePrefix(DefaultExternalCIDR)
	}
	c.External = c.External.Masked()
	if !c.External.Addr().Is4() || !offsetFits(c.External, externalRangeEnd) {
		return c, fmt.Errorf("--external-cidr %s: want an IPv4 /24 or larger (routers and floating IPs take .%d to .%d)", c.External, externalRangeStart, externalRangeEnd)
	}
	if c.External.Overlaps(c.Underlay) || c.External.Overlaps(c.Provisioning) {
		return c, fmt.Errorf("--external-cidr %s overlaps the underlay %s or the provisioning network %s", c.External, c.Underlay, c.Provisioning)
	}
	if !c.External6.IsValid() {
		c.External6 = netip.MustParsePrefix(DefaultExternal6CIDR)
	}
	if !c.Routed6.IsValid() {
		c.Routed6 = netip.MustParsePrefix(DefaultRouted6CIDR)
	}
	c.External6, c.Routed6 = c.External6.Masked(), c.Routed6.Masked()
	if !c.External6.Addr().Is6() || c.External6.Addr().Is4In6() || c.External6.Bits() != 64 {
		return c, fmt.Errorf("--external6-cidr %s: want an IPv6 /64 (routers take EUI-64 addresses in it)", c.External6)
	}
	if !c.Routed6.Addr().Is6() || c.Routed6.Addr().Is4In6() || c.Routed6.Bits() > 64 || c.Routed6.Overlaps(c.External6) {
		return c, fmt.Errorf("--routed6-cidr %s: want an IPv6 prefix of /64 or shorter that does not overlap --external6-cidr %s", c.Routed6, c.External6)
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Site == "" {
		c.Site = DefaultSite
	}
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("finding the hearth binary: %w", err)
		}
		c.Executable = exe
	}
	if c.AgentCommand == nil {
		c.AgentCommand = DefaultAgentCommand(c.Executable)
	}
	if c.BootCommand == nil {
		c.BootCommand = DefaultBootCommand(c.Executable)
		c.defaultBootCommand = true
	}
	if c.DNSMasq == "" {
		c.DNSMasq = DefaultDNSMasq
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c, nil
}

// validPrefix keeps every name the sandbox derives from the prefix a
// valid interface name (at most 15 bytes, e.g. "hsb-ctl") and a plain file
// name under /run/netns.
func validPrefix(p string) error {
	if p == "" {
		return errors.New("--prefix is empty")
	}
	if len(p) > 10 {
		return fmt.Errorf("--prefix %q is longer than 10 characters (interface names are limited to 15)", p)
	}
	for i, r := range p {
		letter := r >= 'a' && r <= 'z'
		if !letter && (i == 0 || !(r >= '0' && r <= '9' || r == '-' || r == '_')) {
			return fmt.Errorf("--prefix %q: start with a lowercase letter, then use letters, digits, '-' and '_'", p)
		}
	}
	return nil
}

// names derives every namespace and link name of a sandbox from its prefix.
type names string

func (n names) underlay() string       { return string(n) + "-underlay" }
func (n names) lan() string            { return string(n) + "-lan" }
func (n names) boot() string           { return string(n) + "-boot" }
func (n names) ctl() string            { return string(n) + "-ctl" }
func (n names) router() string         { return string(n) + "-router" }
func (n names) internet() string       { return string(n) + "-internet" }
func (n names) storage() string        { return string(n) + "-storage" }
func (n names) host(i int) string      { return "h" + strconv.Itoa(i) }
func (n names) hostNetns(i int) string { return string(n) + "-" + n.host(i) }

// isOurs reports whether a namespace of this name is one a sandbox with
// this prefix makes.
func (n names) isOurs(name string) bool {
	return name == n.underlay() || name == n.lan() || name == n.boot() || name == n.router() || name == n.internet() || name == n.storage() || n.isHostNetns(name)
}

// isHostNetns reports whether name is PREFIX-h<digits>.
func (n names) isHostNetns(name string) bool {
	rest, ok := strings.CutPrefix(name, string(n)+"-h")
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.Atoi(rest)
	return err == nil && rest[0] != '0'
}

// Addresses in the underlay: the root namespace's end is .1, the shared
// storage .8, the boot service .9, host i is .(10+i).
func hostOffset(i int) int { return 10 + i }

const (
	ctlOffset          = 1
	bootUnderlayOffset = 9
)

// Addresses in the provisioning network. .1 is the home router's
// (--home-router), which hands out .50 to .99.
const (
	routerOffset      = 1
	routerStartOffset = 50
	routerEndOffset   = 99
	bootProvOffset    = 2
	poolStartOffset   = 100
	poolEndOffset     = 199
	bootHTTPPort      = 8080
	// Prometheus metrics (plain HTTP), on the underlay only: agents on
	// their host's address, the boot service on its underlay leg (never
	// on the provisioning network). The ports of docs/prometheus.
	agentMetricsPort = 9464
	bootMetricsPort  = 9465
)

func offsetFits(p netip.Prefix, off int) bool {
	size := 1 << (32 - p.Bits())
	return off > 0 && off < size-1
}

// addrAt returns the address off places after the prefix's first.
func addrAt(p netip.Prefix, off int) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(off)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
