// Package doctor checks whether a machine can play a Hearth role (the
// server, an agent, a boot service, the sandbox) and says, for every
// missing piece, what to do about it: the Debian package to install, the
// sysctl to set, the flag to give.
//
// Checks try rather than read: kernel features are tried by making a
// bridge, a VXLAN device, a tap and nftables tables in a throwaway network
// namespace (a module that loads on demand passes, a kernel built without
// the feature or a container without the right fails); KVM by booting a
// tiny guest (compute.DetectKVM); QEMU's firmware and option ROMs by
// starting QEMU paused with them; the block drivers by asking qemu-img to
// open an image with them; ports by binding them; the disk by timing
// fsync the way etcd's write-ahead log does. Reading module lists or
// package databases would pass on machines where Hearth then fails.
//
// `hearth doctor` prints the findings; the agent runs the agent's checks
// at start and reports what fails as conditions on its Host, so `hearth
// get hosts` shows a host that cannot run VMs, and `hearth describe host`
// why.
package doctor

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Role is what a machine is about to be.
type Role string

// The roles a machine can be checked for.
const (
	Server  Role = "server"
	Agent   Role = "agent"
	Boot    Role = "boot"
	Sandbox Role = "sandbox"
)

// Roles are every role, in the order they are reported.
var Roles = []Role{Server, Agent, Boot, Sandbox}

// ParseRole reads a --role value.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%q is not a role (want server, agent, boot or sandbox)", s)
}

// Status is how a check came out.
type Status int

const (
	// OK: the role has what it needs here.
	OK Status = iota
	// Skipped: the check could not be made (not root, nothing to check
	// against); the finding says what would make it possible.
	Skipped
	// Warn: the role works, but worse (VMs under TCG, a slow disk, a
	// clock that drifts) or not for everything (no Ceph driver).
	Warn
	// Fail: the role cannot work here until this is fixed.
	Fail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Skipped:
		return "skip"
	case Warn:
		return "warn"
	default:
		return "FAIL"
	}
}

// MarshalText makes a Status read as its name in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(strings.ToLower(s.String())), nil }

// UnmarshalText reads a Status's name.
func (s *Status) UnmarshalText(b []byte) error {
	for _, st := range []Status{OK, Skipped, Warn, Fail} {
		if strings.EqualFold(st.String(), string(b)) {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("%q is not a doctor status (ok, skip, warn, fail)", b)
}

// Finding is the outcome of one check.
type Finding struct {
	// Check names what was checked: "vxlan", "kvm", "fsync"…
	Check string `json:"check"`
	// Condition is the Host condition type an agent reports the finding
	// under (several checks may share one).
	Condition string `json:"condition"`
	Status    Status `json:"status"`
	// Message says what was found, in a sentence.
	Message string `json:"message"`
	// Fix says what to do, when there is something to do.
	Fix string `json:"fix,omitempty"`
}

// Options say what to check and against what. The zero value checks every
// role with Debian's paths and Hearth's default ports.
type Options struct {
	// Roles to check (default all).
	Roles []Role
	// DataDirs are the data directories by role (default each role's
	// default: /var/lib/hearth, /var/lib/hearth-agent, …).
	DataDirs map[Role]string
	// Ports are the ports each role listens on, as "tcp/8443" or
	// "udp/67" (default Hearth's defaults).
	Ports map[Role][]string
	// Server is the API's URL an agent or a boot service reaches, and
	// CAFile the cluster CA to trust; without them, the credentials an
	// agent or boot service keeps in its data directory say.
	Server string
	CAFile string
	// QEMU is the emulator (default qemu-system-x86_64), QEMUImg its
	// disk tool (default qemu-img), OVMFCode and OVMFVars the UEFI
	// firmware (default Debian's 4 MiB images), IPXEDir where the boot
	// service finds iPXE (default /usr/lib/ipxe).
	QEMU, QEMUImg      string
	OVMFCode, OVMFVars string
	IPXEDir            string
	// Skip names checks not to make (the agent skips ports and the
	// server: it listens on its port and reached the server already).
	Skip []string
}

// DefaultDataDirs are the roles' default data directories (the flags'
// defaults when run as root).
var DefaultDataDirs = map[Role]string{
	Server:  "/var/lib/hearth",
	Agent:   "/var/lib/hearth-agent",
	Boot:    "/var/lib/hearth-boot",
	Sandbox: "/var/lib/hearth-sandbox",
}

// DefaultPorts are what each role listens on by default: the API and
// etcd's peer port; the agent's console endpoint; DHCP, TFTP and HTTP of
// the boot service. The sandbox picks its own.
var DefaultPorts = map[Role][]string{
	Server: {"tcp/8443", "tcp/2380"},
	Agent:  {"tcp/9443"},
	Boot:   {"udp/67", "udp/69", "tcp/8080"},
}

func (o Options) withDefaults() Options {
	if len(o.Roles) == 0 {
		o.Roles = Roles
	}
	dirs := map[Role]string{}
	for r, d := range DefaultDataDirs {
		dirs[r] = d
	}
	for r, d := range o.DataDirs {
		dirs[r] = d
	}
	o.DataDirs = dirs
	if o.Ports == nil {
		o.Ports = DefaultPorts
	}
	if o.QEMU == "" {
		o.QEMU = "qemu-system-x86_64"
	}
	if o.QEMUImg == "" {
		o.QEMUImg = "qemu-img"
	}
	if o.OVMFCode == "" {
		o.OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	}
	if o.OVMFVars == "" {
		o.OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	}
	if o.IPXEDir == "" {
		o.IPXEDir = "/usr/lib/ipxe"
	}
	return o
}

// check is one thing to try. key tells checks apart when the same check
// runs with different inputs (the data directories of two roles): a
// check with the same key runs once and its findings serve every role.
type check struct {
	key string
	run func(ctx context.Context) []Finding
}

// plan lists the checks of a role, in the order they are reported.
func (o Options) plan(r Role) []check {
	var cs []check
	add := func(key string, run func(context.Context) []Finding) { cs = append(cs, check{key, run}) }
	kernel := func() { add("kernel", func(ctx context.Context) []Finding { return kernelFeatures(ctx) }) }
	qemu := func() {
		add("qemu", func(ctx context.Context) []Finding { return o.qemuChecks(ctx) })
		add("kvm", func(ctx context.Context) []Finding { return o.kvm(ctx) })
	}
	dir := o.DataDirs[r]
	switch r {
	case Server:
		add("data-dir:"+dir, func(context.Context) []Finding { return dataDir(dir, true, serverSpace) })
		add("fsync:"+dir, func(ctx context.Context) []Finding { return fsyncLatency(ctx, dir) })
		add("ports:server", func(context.Context) []Finding { return ports(o.Ports[r]) })
		add("clock", func(context.Context) []Finding { return clock() })
	case Agent:
		kernel()
		add("bridge-netfilter", func(context.Context) []Finding { return bridgeNetfilter() })
		qemu()
		add("qemu-img:"+dir, func(ctx context.Context) []Finding { return o.qemuImg(ctx, dir) })
		add("data-dir:"+dir, func(context.Context) []Finding { return dataDir(dir, false, agentSpace) })
		add("ports:agent", func(context.Context) []Finding { return ports(o.Ports[r]) })
		add("clock", func(context.Context) []Finding { return clock() })
		add("server:"+dir, func(ctx context.Context) []Finding { return o.reach(ctx, dir) })
	case Boot:
		add("ipxe", func(context.Context) []Finding { return o.ipxe() })
		add("data-dir:"+dir, func(context.Context) []Finding { return dataDir(dir, false, bootSpace) })
		add("ports:boot", func(context.Context) []Finding { return ports(o.Ports[r]) })
		add("clock", func(context.Context) []Finding { return clock() })
		add("server:"+dir, func(ctx context.Context) []Finding { return o.reach(ctx, dir) })
	case Sandbox:
		kernel()
		qemu()
		add("qemu-img:"+dir, func(ctx context.Context) []Finding { return o.qemuImg(ctx, dir) })
		add("ipxe", func(context.Context) []Finding { return o.ipxe() })
		add("testguest", func(context.Context) []Finding { return testGuestTools() })
		add("data-dir:"+dir, func(context.Context) []Finding { return dataDir(dir, false, sandboxSpace) })
	}
	return cs
}

// Report is what Run found, by role.
type Report struct {
	Roles    []Role             `json:"roles"`
	Findings map[Role][]Finding `json:"findings"`
}

// Worst is the worst status of any finding.
func (r Report) Worst() Status {
	w := OK
	for _, fs := range r.Findings {
		for _, f := range fs {
			w = max(w, f.Status)
		}
	}
	return w
}

// All returns every finding once, in the order of the roles (a check
// shared by two roles counts once).
func (r Report) All() []Finding {
	var out []Finding
	seen := map[string]bool{}
	for _, role := range r.Roles {
		for _, f := range r.Findings[role] {
			if k := f.Check + "\x00" + f.Message; !seen[k] {
				seen[k] = true
				out = append(out, f)
			}
		}
	}
	return out
}

// Run makes the checks of every role in opts, each once, several at a
// time, and returns what they found.
func Run(ctx context.Context, opts Options) Report {
	opts = opts.withDefaults()
	skip := map[string]bool{}
	for _, s := range opts.Skip {
		skip[s] = true
	}
	type result struct {
		once     sync.Once
		findings []Finding
	}
	results := map[string]*result{}
	plans := map[Role][]check{}
	for _, r := range opts.Roles {
		plans[r] = opts.plan(r)
		for _, c := range plans[r] {
			if results[c.key] == nil {
				results[c.key] = &result{}
			}
		}
	}
	var wg sync.WaitGroup
	for _, r := range opts.Roles {
		for _, c := range plans[r] {
			res := results[c.key]
			wg.Add(1)
			go func() {
				defer wg.Done()
				res.once.Do(func() { res.findings = c.run(ctx) })
			}()
		}
	}
	wg.Wait()
	rep := Report{Roles: opts.Roles, Findings: map[Role][]Finding{}}
	for _, r := range opts.Roles {
		for _, c := range plans[r] {
			for _, f := range results[c.key].findings {
				if !skip[f.Check] {
					rep.Findings[r] = append(rep.Findings[r], f)
				}
			}
		}
	}
	return rep
}

// Summary is a line that counts the findings and says what they mean.
func (r Report) Summary() string {
	n := map[Status]int{}
	for _, f := range r.All() {
		n[f.Status]++
	}
	parts := []string{plural(n[OK], "check passed", "checks passed")}
	if n[Warn] > 0 {
		parts = append(parts, plural(n[Warn], "warning", "warnings"))
	}
	if n[Fail] > 0 {
		parts = append(parts, plural(n[Fail], "failure", "failures"))
	}
	if n[Skipped] > 0 {
		parts = append(parts, fmt.Sprintf("%d not checked", n[Skipped]))
	}
	roles := make([]string, len(r.Roles))
	for i, role := range r.Roles {
		roles[i] = string(role)
	}
	verdict := "ready for " + strings.Join(roles, ", ")
	if n[Fail] > 0 {
		var bad []string
		for _, role := range r.Roles {
			for _, f := range r.Findings[role] {
				if f.Status == Fail {
					bad = append(bad, string(role))
					break
				}
			}
		}
		verdict = "not ready for " + strings.Join(bad, ", ") + ": fix the failures above"
	}
	return strings.Join(parts, ", ") + "; " + verdict
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// since is a duration in the unit a person reads it in.
func since(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}
