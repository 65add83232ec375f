package profile

import (
	"fmt"
	"strings"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
)

// Action is what a machine's next network boot does.
type Action string

const (
	// ActionWait: the machine may not boot anything yet (it is not
	// approved, or has no profile). Its script says why and asks again
	// after a pause, so approving it needs no trip to the power button.
	ActionWait Action = "wait"
	// ActionBoot: boot the profile, an installer or a stateless RAM root.
	ActionBoot Action = "boot"
	// ActionLocal: the profile's installer has reported success; boot the
	// local disk.
	ActionLocal Action = "local"
)

// DefaultRetry is how long a waiting machine pauses before asking again.
const DefaultRetry = 10 * time.Second

// Next says what m's next network boot does with profile p (nil while it
// has none), and why, in words for its console and its events.
func Next(m *api.Machine, p *api.MachineProfile) (Action, string) {
	name := m.Metadata.Name
	switch {
	case p == nil:
		return ActionWait, fmt.Sprintf("machine %s (%s) has no profile", name, m.Spec.MAC)
	case !api.MachineMayBoot(m, p):
		return ActionWait, fmt.Sprintf("machine %s (%s) is waiting for approval: hearth machine approve %s", name, m.Spec.MAC, name)
	case p.Spec.Install && api.MachineInstallDone(m):
		return ActionLocal, fmt.Sprintf("machine %s is installed (profile %s): booting from its local disk", name, p.Metadata.Name)
	case p.Spec.Install && api.MachineReinstallPending(m):
		return ActionBoot, fmt.Sprintf("machine %s: reinstalling profile %s", name, p.Metadata.Name)
	case p.Spec.Install:
		return ActionBoot, fmt.Sprintf("machine %s: installing profile %s", name, p.Metadata.Name)
	}
	return ActionBoot, fmt.Sprintf("machine %s: booting profile %s", name, p.Metadata.Name)
}

// BootPlan is what a machine's next network boot does, with every
// template rendered. IPXEScript turns it into the script iPXE runs.
type BootPlan struct {
	Action  Action
	Machine string
	MAC     string
	// Profile is the profile's name ("" while the machine has none).
	Profile string
	// Message says what happens and why, for the console and the boot
	// timeline.
	Message string

	// Kernel, Initrds and Args (rendered) boot a kernel (ActionBoot).
	Kernel  string
	Initrds []string
	Args    string
	// Script is the profile's rendered iPXE script (ActionBoot, for
	// profiles that boot by script instead of a kernel).
	Script string

	// RetryURL is the script a waiting machine chains to after
	// RetryAfter (ActionWait).
	RetryURL   string
	RetryAfter time.Duration
	// Renew makes a waiting machine run DHCP again before it asks
	// (ActionWait): the boot service did not recognise the address the
	// machine asked from as the one DHCP gave it (it restarted, say), and
	// learns it from the new exchange.
	Renew bool
}

// WaitPlan is a plan that tells the machine's console message and asks
// again later: for a machine without a profile (say the Match error) or
// not yet approved.
func WaitPlan(m *api.Machine, message string, v Values) BootPlan {
	return BootPlan{Action: ActionWait, Machine: m.Metadata.Name, MAC: m.Spec.MAC, Message: message,
		RetryURL: v.URLs.Script, RetryAfter: DefaultRetry}
}

// RenderBoot plans m's next network boot with profile p (nil while it has
// none): Next decides what it does; to boot the profile it takes the boot
// for the machine's architecture (its variant, else the default), and
// renders its kernel args or iPXE script with v, whose URLs.Kernel and
// Initrds it sets to that boot's. Values reaching the args or the script
// must be safe boot words (CheckWord).
func RenderBoot(m *api.Machine, p *api.MachineProfile, v Values) (BootPlan, error) {
	action, why := Next(m, p)
	plan := WaitPlan(m, why, v)
	plan.Action = action
	if p == nil {
		return plan, nil
	}
	plan.Profile = p.Metadata.Name
	if action != ActionBoot {
		return plan, nil
	}
	arch := api.NormalizeArch(m.Spec.Architecture)
	b, ok := p.Spec.BootFor(arch)
	if !ok {
		if arch == "" {
			return BootPlan{}, fmt.Errorf("profile %s boots only by architecture (variants) and the architecture of machine %s is not known yet: set its spec.architecture or give the profile a default boot", p.Metadata.Name, m.Metadata.Name)
		}
		return BootPlan{}, fmt.Errorf("profile %s has no boot for %s (machine %s): add variants.%s or a default boot", p.Metadata.Name, arch, m.Metadata.Name, arch)
	}
	path := "spec"
	if _, variant := p.Spec.Variants[arch]; variant {
		path = "spec.variants." + arch
	}
	fail := func(err error) (BootPlan, error) {
		return BootPlan{}, fmt.Errorf("profile %s, machine %s: %w", p.Metadata.Name, m.Metadata.Name, err)
	}
	v.URLs.Kernel, v.URLs.Initrds = "", nil
	if b.Kernel == nil {
		script, err := renderWords(path+".ipxeScript", b.IPXEScript, v)
		if err != nil {
			return fail(err)
		}
		plan.Script = script
		return plan, nil
	}
	v.URLs.Kernel = b.Kernel.URL
	for _, f := range b.Initrds {
		v.URLs.Initrds = append(v.URLs.Initrds, f.URL)
	}
	for i, u := range append([]string{v.URLs.Kernel}, v.URLs.Initrds...) {
		field := path + ".kernel.url"
		if i > 0 {
			field = fmt.Sprintf("%s.initrds[%d].url", path, i-1)
		}
		if why := CheckWord(u); why != "" {
			return fail(fmt.Errorf("%s %q cannot go into an iPXE script: %s", field, truncate(u), why))
		}
	}
	args, err := renderWords(path+".args", b.Args, v)
	if err != nil {
		return fail(err)
	}
	args = strings.TrimSpace(args)
	if why := checkLine(args); why != "" {
		return fail(fmt.Errorf("%s renders to %q: %s", path+".args", truncate(args), why))
	}
	plan.Kernel, plan.Initrds, plan.Args = v.URLs.Kernel, v.URLs.Initrds, args
	return plan, nil
}

// checkLine returns why s cannot be the rest of one iPXE line, or "".
func checkLine(s string) string {
	for _, r := range s {
		if r == '\n' || r == '\r' {
			return "kernel args must be one line"
		}
		if r < 0x20 || r == 0x7f {
			return fmt.Sprintf("it contains the control character %U", r)
		}
	}
	if strings.HasSuffix(s, `\`) {
		return "a trailing backslash would join the next iPXE line to it"
	}
	return ""
}

// IPXEScript is the script an iPXE client runs for plan:
//
//   - ActionBoot with a kernel: "kernel URL ARGS", an "initrd URL" per
//     initrd, then "boot".
//   - ActionBoot with a script: the profile's rendered script, with
//     "#!ipxe" added when it lacks one.
//   - ActionLocal: boot the local disk. On BIOS, "sanboot --no-describe
//     --drive 0x80" boots the first hard disk directly, which works
//     whatever the firmware's boot order and on the BIOSes whose INT 18h
//     (what "exit" does) halts instead of trying the next device. UEFI has
//     no drive 0x80, so there (or if sanboot fails) "exit" hands the
//     machine back to the firmware's boot manager, which boots the next
//     entry: the installed system. The script tells the two apart at run
//     time with ${platform}, so a machine whose firmware is not yet known
//     still boots.
//   - ActionWait: print the message, sleep RetryAfter, and chain to
//     RetryURL again (looping while the server cannot be reached).
//
// A plan that could inject iPXE commands (an unsafe URL, multi-line args:
// only possible for plans not made by RenderBoot) is not booted: the
// script prints why and waits.
func IPXEScript(plan BootPlan) string {
	if why := unsafePlan(plan); why != "" {
		fallback := plan
		fallback.Action, fallback.Message = ActionWait, fmt.Sprintf("cannot boot machine %s: %s", plan.Machine, why)
		if CheckWord(fallback.RetryURL) != "" {
			fallback.RetryURL = ""
		}
		return waitScript(fallback)
	}
	var b strings.Builder
	line := func(words ...string) {
		b.WriteString(strings.Join(words, " "))
		b.WriteByte('\n')
	}
	switch plan.Action {
	case ActionBoot:
		if plan.Script != "" {
			s := strings.TrimLeft(plan.Script, " \t\r\n")
			if !strings.HasPrefix(s, "#!ipxe") && !strings.HasPrefix(s, "#!gpxe") {
				line("#!ipxe")
			}
			b.WriteString(s)
			if !strings.HasSuffix(s, "\n") {
				b.WriteByte('\n')
			}
			return b.String()
		}
		line("#!ipxe")
		line("echo", echoText("Hearth: "+plan.Message))
		// Each initrd is loaded under a name of its own, and the kernel
		// is told those names (initrd=NAME): under UEFI, iPXE hands the
		// kernel only the initrds its command line names (BIOS ignores it).
		kernel := []string{"kernel", plan.Kernel}
		var initrds [][]string
		for i, u := range plan.Initrds {
			name := fmt.Sprintf("initrd%d", i)
			kernel = append(kernel, "initrd="+name)
			initrds = append(initrds, []string{"initrd", "--name", name, u})
		}
		if plan.Args != "" {
			kernel = append(kernel, plan.Args)
		}
		line(kernel...)
		for _, l := range initrds {
			line(l...)
		}
		line("boot")
		return b.String()
	case ActionLocal:
		line("#!ipxe")
		line("echo", echoText("Hearth: "+plan.Message))
		line("iseq ${platform} efi || sanboot --no-describe --drive 0x80 ||")
		line("exit")
		return b.String()
	}
	return waitScript(plan)
}

func waitScript(plan BootPlan) string {
	secs := max(int(plan.RetryAfter.Round(time.Second)/time.Second), 1)
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	if plan.RetryURL != "" {
		b.WriteString(":retry\n")
	}
	fmt.Fprintf(&b, "echo %s\n", echoText("Hearth: "+plan.Message))
	if plan.RetryURL == "" {
		fmt.Fprintf(&b, "sleep %d\nexit 1\n", secs)
		return b.String()
	}
	fmt.Fprintf(&b, "echo Asking again in %d seconds.\nsleep %d\n", secs, secs)
	if plan.Renew {
		// A failed DHCP is not fatal: the chain below says more.
		b.WriteString("dhcp ||\n")
	}
	fmt.Fprintf(&b, "chain --replace --autofree %s || goto retry\n", plan.RetryURL)
	return b.String()
}

// unsafePlan returns why a plan cannot be put into a script, or "".
func unsafePlan(plan BootPlan) string {
	if plan.Action == ActionLocal {
		return ""
	}
	if plan.Action == ActionWait {
		if plan.RetryURL != "" {
			if why := CheckWord(plan.RetryURL); why != "" {
				return "retry URL: " + why
			}
		}
		return ""
	}
	if plan.Action != ActionBoot {
		return fmt.Sprintf("unknown action %q", plan.Action)
	}
	if plan.Script != "" {
		return ""
	}
	if plan.Kernel == "" {
		return "the plan has neither a kernel nor a script"
	}
	for _, u := range append([]string{plan.Kernel}, plan.Initrds...) {
		if why := CheckWord(u); why != "" {
			return fmt.Sprintf("URL %q: %s", truncate(u), why)
		}
	}
	if why := checkLine(plan.Args); why != "" {
		return "args: " + why
	}
	return ""
}

// EchoText is s made safe as the words of an iPXE echo (see echoText),
// for scripts the boot service writes itself.
func EchoText(s string) string { return echoText(s) }

// echoText makes s safe as the words of an iPXE echo: what iPXE would
// read as a line break, a command separator, a setting or a continuation
// is replaced, so a message can never run a command.
func echoText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || r > 0x7e:
			b.WriteByte(' ')
		case strings.ContainsRune(`$\;|&#`, r):
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
