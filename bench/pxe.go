package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/sandbox"
)

// PXEConfig says how to run the network-boot benchmark.
type PXEConfig struct {
	// Machines is how many machines boot at once.
	Machines int
	// UEFI boots OVMF (DHCP, ipxe.efi over TFTP, then HTTP) instead of
	// SeaBIOS with QEMU's iPXE ROM.
	UEFI bool
	// Dir is the sandbox's directory.
	Dir string
	// Memory is each machine's QEMU -m (default the sandbox's).
	Memory  string
	Timeout time.Duration
	// NoSolo skips the one-machine-alone comparison.
	NoSolo bool
}

// PXEProfile is the MachineProfile the benchmark applies.
const PXEProfile = "bench-pxe"

// pxeTimes are the moments of one machine's way to userspace.
type pxeTimes struct {
	name, mac   string
	powerOn     time.Time // QEMU started
	dhcp        time.Time // first DHCP request: Discovered event, creationTimestamp
	bootScript  time.Time // boot.ipxe with the profile's boot served
	report      time.Time // the guest's report taken: its Report event
	lastSeen    time.Time // status.lastSeen once Ready, if no Report event is read
	ready       bool
	machineName string // the Machine object's name
}

// RunPXE powers on cfg.Machines sandbox machines at once that network-boot
// the test guest through a stateless profile, waits until each guest's
// userspace has reported back (phase Ready), and prints per machine the
// time from power-on to its first DHCP request, to its boot script and to
// its report, and the total until all of them reported; then the same for
// one machine alone. Machines and profile are removed afterwards.
func RunPXE(ctx context.Context, c *client.Client, cfg PXEConfig, w io.Writer) error {
	if cfg.Machines < 1 {
		return errors.New("--machines must be at least 1")
	}
	if cfg.Dir == "" {
		cfg.Dir = sandbox.DefaultDir
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	fw := "bios"
	if cfg.UEFI {
		fw = "uefi"
	}
	var batch []string
	for i := 1; i <= cfg.Machines; i++ {
		batch = append(batch, fmt.Sprintf("bench-%02d", i))
	}
	solo := "bench-solo"
	macs := []string{}
	for _, n := range append([]string{solo}, batch...) {
		macs = append(macs, sandbox.MachineMAC(n))
	}
	if err := applyPXEProfile(ctx, c, cfg.Dir, macs); err != nil {
		return fmt.Errorf("applying profile %s: %w", PXEProfile, err)
	}
	defer func() { _, _ = c.Delete(context.Background(), "MachineProfile", "", PXEProfile) }()

	fmt.Fprintf(w, "Network boot (%s firmware) of the test guest through the stateless profile %s; sandbox %s\n", fw, PXEProfile, cfg.Dir)
	fmt.Fprintf(w, "power-on = QEMU started; DHCP = first DHCP request (Machine discovered); boot.ipxe = profile's boot script served; userspace = the guest's report taken (phase Ready)\n\n")
	type run struct {
		label string
		names []string
	}
	runs := []run{{fmt.Sprintf("%d at once", cfg.Machines), batch}}
	if !cfg.NoSolo {
		runs = append([]run{{"1 alone", []string{solo}}}, runs...)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tpower-on→DHCP p50\tmax\t→boot.ipxe p50\tmax\t→userspace p50\tmax\tpower-on spread\tall in userspace\t")
	var details [][]*pxeTimes
	for _, r := range runs {
		times, total, err := bootBatch(ctx, c, cfg, r.names)
		if err != nil {
			tw.Flush()
			return fmt.Errorf("%s: %w", r.label, err)
		}
		details = append(details, times)
		var dhcp, script, user []time.Duration
		first, last := times[0].powerOn, times[0].powerOn
		for _, t := range times {
			dhcp = append(dhcp, t.dhcp.Sub(t.powerOn))
			script = append(script, t.bootScript.Sub(t.powerOn))
			user = append(user, t.report.Sub(t.powerOn))
			if t.powerOn.Before(first) {
				first = t.powerOn
			}
			if t.powerOn.After(last) {
				last = t.powerOn
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.label,
			secs(pct(dhcp, 50)), secs(pct(dhcp, 100)), secs(pct(script, 50)), secs(pct(script, 100)),
			secs(pct(user, 50)), secs(pct(user, 100)), secs(last.Sub(first)), secs(total))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\n(all in userspace = first power-on to last report; power-on spread = first to last QEMU start, as the sandbox adds machines one after another)")
	fmt.Fprintln(w, "\nPer machine, seconds after its power-on:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "machine\tMachine\tpowered on\tDHCP\tboot.ipxe\tuserspace\t")
	for _, times := range details {
		t0 := times[0].powerOn
		for _, t := range times {
			if t.powerOn.Before(t0) {
				t0 = t.powerOn
			}
		}
		for _, t := range times {
			fmt.Fprintf(tw, "%s\t%s\t+%s\t%s\t%s\t%s\t\n", t.name, t.machineName, secs(t.powerOn.Sub(t0)),
				secs(t.dhcp.Sub(t.powerOn)), secs(t.bootScript.Sub(t.powerOn)), secs(t.report.Sub(t.powerOn)))
		}
	}
	return tw.Flush()
}

// applyPXEProfile creates or updates the benchmark's profile: stateless,
// auto-approved, selecting the benchmark's machines by MAC.
func applyPXEProfile(ctx context.Context, c *client.Client, dir string, macs []string) error {
	spec := api.MachineProfileSpec{
		Description: "hearth bench pxe: boots the sandbox's test guest, which reports back",
		Selector:    api.MachineSelector{MACs: macs},
		AutoApprove: true,
		Install:     false,
		ProfileBoot: api.ProfileBoot{
			Kernel:  &api.BootFile{URL: "file://" + dir + "/testguest/vmlinuz"},
			Initrds: []api.BootFile{{URL: "file://" + dir + "/testguest/initrd.img"}},
			Args:    "console=ttyS0 panic=-1 hearth.report={{.URLs.Report}} hearth.token={{.Token}} hearth.hostname={{.Hostname}}",
		},
	}
	obj, err := c.Get(ctx, "MachineProfile", "", PXEProfile)
	if err == nil {
		p := obj.(*api.MachineProfile)
		p.Spec = spec
		_, err = c.Update(ctx, p)
		return err
	}
	if !api.IsNotFound(err) {
		return err
	}
	p := &api.MachineProfile{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "MachineProfile"},
		Metadata: api.ObjectMeta{Name: PXEProfile}, Spec: spec}
	_, err = c.Create(ctx, p)
	return err
}

// bootBatch powers on the named machines at once, waits until every one
// is Ready, and removes them again (sandbox machine and Machine object).
func bootBatch(ctx context.Context, c *client.Client, cfg PXEConfig, names []string) ([]*pxeTimes, time.Duration, error) {
	times := make([]*pxeTimes, len(names))
	byMAC := map[string]*pxeTimes{}
	for i, n := range names {
		times[i] = &pxeTimes{name: n, mac: strings.ToLower(sandbox.MachineMAC(n))}
		byMAC[times[i].mac] = times[i]
	}
	// Machines left from an interrupted run would skip discovery.
	if err := deleteMachines(ctx, c, byMAC); err != nil {
		return nil, 0, err
	}
	defer func() {
		for _, t := range times {
			if err := sandbox.RemoveMachine(context.Background(), cfg.Dir, t.name); err != nil && !strings.Contains(err.Error(), "no machine") {
				fmt.Fprintf(os.Stderr, "removing sandbox machine %s: %v\n", t.name, err)
			}
		}
		_ = deleteMachines(context.Background(), c, byMAC)
	}()

	// Power them all on at once. The sandbox serializes adding machines
	// on its state lock, so the QEMU start times are each machine's own
	// power-on.
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, t := range times {
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := time.Now()
			m, err := sandbox.AddMachine(ctx, sandbox.MachineConfig{Dir: cfg.Dir, Name: t.name, UEFI: cfg.UEFI, Memory: cfg.Memory})
			if err != nil {
				errs[i] = err
				return
			}
			t.powerOn = before
			if m.QEMU != nil {
				if at, err := processStart(m.QEMU.StartTime); err == nil {
					t.powerOn = at
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}

	deadline := time.Now().Add(cfg.Timeout)
	for {
		pending, err := pollPXE(ctx, c, byMAC)
		if err != nil {
			return nil, 0, err
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("not Ready after %s: %s", cfg.Timeout, strings.Join(pending, "; "))
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	first, last := times[0].powerOn, times[0].report
	for _, t := range times {
		if t.powerOn.Before(first) {
			first = t.powerOn
		}
		if t.report.After(last) {
			last = t.report
		}
	}
	return times, last.Sub(first), nil
}

// pollPXE reads the benchmark's Machines and their events into byMAC and
// says which are not Ready yet. Every time comes from the objects, so how
// often it polls does not change the figures.
func pollPXE(ctx context.Context, c *client.Client, byMAC map[string]*pxeTimes) ([]string, error) {
	objs, _, err := c.List(ctx, "Machine", "", client.ListOptions{})
	if err != nil {
		return nil, err
	}
	uids := map[string]*pxeTimes{}
	for _, o := range objs {
		m := o.(*api.Machine)
		t := byMAC[strings.ToLower(m.Spec.MAC)]
		if t == nil {
			continue
		}
		t.machineName = m.Metadata.Name
		uids[m.Metadata.UID] = t
		if ct := m.Metadata.CreationTimestamp; ct != nil && (t.dhcp.IsZero() || ct.Before(t.dhcp)) {
			t.dhcp = *ct
		}
		t.ready = m.Status.Phase == api.MachineReady
		if t.ready && t.lastSeen.IsZero() && m.Status.LastSeen != nil {
			t.lastSeen = *m.Status.LastSeen
		}
	}
	evs, _, err := c.List(ctx, "Event", "", client.ListOptions{FieldSelector: "involvedObject.kind=Machine"})
	if err != nil {
		return nil, err
	}
	for _, o := range evs {
		e := o.(*api.Event)
		t := uids[e.Spec.InvolvedObject.UID]
		if t == nil || e.Spec.FirstTimestamp == nil {
			continue
		}
		at := *e.Spec.FirstTimestamp
		earliest := func(p *time.Time) {
			if p.IsZero() || at.Before(*p) {
				*p = at
			}
		}
		switch {
		case e.Spec.Reason == "Discovered":
			earliest(&t.dhcp)
		case e.Spec.Reason == "HTTP" && strings.HasPrefix(e.Spec.Message, "boot.ipxe: boot"):
			earliest(&t.bootScript)
		case e.Spec.Reason == "Report" && e.Spec.Type == api.EventNormal:
			earliest(&t.report)
		}
	}
	var pending []string
	for _, t := range byMAC {
		if t.ready && t.report.IsZero() && !t.lastSeen.IsZero() {
			t.report = t.lastSeen
		}
		if !t.ready || t.report.IsZero() || t.bootScript.IsZero() || t.dhcp.IsZero() {
			state := "not discovered"
			if t.machineName != "" {
				state = "discovered as " + t.machineName
			}
			pending = append(pending, t.name+" "+state)
		}
	}
	return pending, nil
}

// deleteMachines deletes the Machine objects with the given MACs and
// waits until they are gone.
func deleteMachines(ctx context.Context, c *client.Client, byMAC map[string]*pxeTimes) error {
	for range 30 {
		objs, _, err := c.List(ctx, "Machine", "", client.ListOptions{})
		if err != nil {
			return err
		}
		left := 0
		for _, o := range objs {
			m := o.(*api.Machine)
			if byMAC[strings.ToLower(m.Spec.MAC)] == nil {
				continue
			}
			left++
			if _, err := c.Delete(ctx, "Machine", "", m.Metadata.Name); err != nil && !api.IsNotFound(err) {
				return err
			}
		}
		if left == 0 {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return errors.New("machines from an earlier run are not gone after 15s")
}

// processStart converts a process's start time in clock ticks after boot
// (/proc/PID/stat field 22) to wall-clock time.
func processStart(ticks uint64) (time.Time, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return time.Time{}, errors.New("/proc/uptime is empty")
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return time.Time{}, err
	}
	boot := now.Add(-time.Duration(up * float64(time.Second)))
	const hz = 100 // USER_HZ, fixed for /proc on Linux
	return boot.Add(time.Duration(ticks) * time.Second / hz), nil
}
