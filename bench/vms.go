package bench

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// VMConfig says how to run the create→Running benchmark.
type VMConfig struct {
	Count int
	// Rate is creates per second.
	Rate float64
	// Tenant to create the VMs in (created if missing).
	Tenant string
	// KernelImage and InitrdImage name the Images of the guest's kernel
	// and initrd (the sandbox's shared testguest-kernel and
	// testguest-initrd).
	KernelImage, InitrdImage string
	Memory                   api.Bytes
	Timeout                  time.Duration
	// Keep leaves the VMs in place afterwards.
	Keep bool
	// Timeline also prints each VM's moments.
	Timeline bool
}

// vmTimes are the moments of one VM's way to Running.
type vmTimes struct {
	sent, scheduled, taken, started, firstOutput time.Time
}

// RunVMs creates cfg.Count VMs at cfg.Rate per second against a running
// cluster, follows them with a watch until every guest has written to its
// console, and reports create→Running with its parts: the control plane
// (API, scheduler, and the watch that brings the bound VM to its host's
// agent), the agent (boot files, disks, seed, QEMU launch) and the guest
// (QEMU start to first output).
//
// The moments come from the objects: bound is the Scheduled condition,
// set by the API server in the binding write; taken is when the Running
// condition the agent sets turned False (Preparing, or Booting when the
// start was quick and Preparing was not written: as of the moment the
// agent began preparing the VM either way); started and first output are
// the agent's status fields.
func RunVMs(ctx context.Context, c *client.Client, cfg VMConfig, w io.Writer) error {
	if cfg.Tenant == "" {
		cfg.Tenant = "bench"
	}
	t := &api.Tenant{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Tenant"}, Metadata: api.ObjectMeta{Name: cfg.Tenant}}
	if _, err := c.Create(ctx, t); err != nil && !api.IsAlreadyExists(err) {
		return err
	}
	run := fmt.Sprintf("b%d", time.Now().Unix()%100000)
	_, rv, err := c.List(ctx, "VirtualMachine", cfg.Tenant, client.ListOptions{})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	events, werr, err := c.WatchOnce(wctx, "VirtualMachine", cfg.Tenant, client.ListOptions{ResourceVersion: rv, LabelSelector: "hearth.dev/bench=" + run})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	times := map[string]*vmTimes{}
	done := make(chan error, 1)
	go func() {
		running := 0
		for ev := range events {
			if ev.Object == nil {
				continue
			}
			vm := ev.Object.(*api.VirtualMachine)
			mu.Lock()
			tm := times[vm.Metadata.Name]
			if tm == nil {
				tm = &vmTimes{}
				times[vm.Metadata.Name] = tm
			}
			if c := vm.Status.Condition(api.ConditionScheduled); c != nil && c.Status == api.ConditionTrue && c.LastTransitionTime != nil {
				tm.scheduled = *c.LastTransitionTime
			}
			if c := vm.Status.Condition(api.ConditionRunning); c != nil && tm.taken.IsZero() && c.LastTransitionTime != nil {
				tm.taken = *c.LastTransitionTime
			}
			if vm.Status.StartedAt != nil {
				tm.started = *vm.Status.StartedAt
			}
			if vm.Status.FirstOutputAt != nil && tm.firstOutput.IsZero() {
				tm.firstOutput = *vm.Status.FirstOutputAt
				running++
			}
			mu.Unlock()
			if running == cfg.Count {
				done <- nil
				return
			}
		}
		done <- fmt.Errorf("watch ended before every VM ran: %v", werr())
	}()

	gap := time.Duration(float64(time.Second) / cfg.Rate)
	start := time.Now()
	for i := 0; i < cfg.Count; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * gap)))
		name := fmt.Sprintf("%s-%03d", run, i)
		vm := &api.VirtualMachine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "VirtualMachine"},
			Metadata: api.ObjectMeta{Name: name, Tenant: cfg.Tenant, Labels: map[string]string{"hearth.dev/bench": run}},
			Spec: api.VirtualMachineSpec{CPUs: 1, Memory: cfg.Memory,
				Boot: api.VMBoot{From: api.BootFromKernel, Kernel: &api.BootFile{Image: cfg.KernelImage}, Initrd: &api.BootFile{Image: cfg.InitrdImage},
					Cmdline: "console=ttyS0 panic=-1 quiet"}}}
		mu.Lock()
		if times[name] == nil {
			times[name] = &vmTimes{}
		}
		times[name].sent = time.Now()
		mu.Unlock()
		if _, err := c.Create(ctx, vm); err != nil {
			return fmt.Errorf("creating %s: %w", name, err)
		}
	}
	err = <-done
	if !cfg.Keep {
		defer func() {
			for name := range times {
				_, _ = c.Delete(context.Background(), "VirtualMachine", cfg.Tenant, name)
			}
		}()
	}
	if err != nil {
		return err
	}
	mu.Lock()
	var total, control, bind, deliver, agent, guest []time.Duration
	for _, tm := range times {
		if tm.firstOutput.IsZero() || tm.scheduled.IsZero() || tm.taken.IsZero() || tm.started.IsZero() {
			continue
		}
		total = append(total, tm.firstOutput.Sub(tm.sent))
		control = append(control, tm.taken.Sub(tm.sent))
		bind = append(bind, tm.scheduled.Sub(tm.sent))
		deliver = append(deliver, tm.taken.Sub(tm.scheduled))
		agent = append(agent, tm.started.Sub(tm.taken))
		guest = append(guest, tm.firstOutput.Sub(tm.started))
	}
	if len(total) < len(times) {
		fmt.Fprintf(w, "(%d of %d VMs left out: a moment of theirs was not seen)\n", len(times)-len(total), len(times))
	}
	mu.Unlock()
	if cfg.Timeline {
		printTimeline(w, times, start)
	}
	fmt.Fprintf(w, "%d VMs created at %.1f/s; Running = QEMU started and the guest's first console output seen\n\n", cfg.Count, cfg.Rate)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "share\tp50\tp95\tmax\t")
	for _, r := range []struct {
		name string
		d    []time.Duration
	}{
		{"create→Running", total},
		{"control plane (create→taken up by its host's agent)", control},
		{"  API and scheduler (create→bound to a host)", bind},
		{"  watch delivery (bound→taken up by the agent)", deliver},
		{"agent (boot files, disks, seed, QEMU launch)", agent},
		{"guest (QEMU start→first output)", guest},
	} {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", r.name, secs(pct(r.d, 50)), secs(pct(r.d, 95)), secs(pct(r.d, 100)))
	}
	return tw.Flush()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// printTimeline prints each VM's moments relative to the first create.
func printTimeline(w io.Writer, times map[string]*vmTimes, start time.Time) {
	names := make([]string, 0, len(times))
	for n := range times {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "vm\tsent\tbound\ttaken\tstarted\tfirst output\t")
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%.2f", t.Sub(start).Seconds())
	}
	for _, n := range names {
		tm := times[n]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", n, at(tm.sent), at(tm.scheduled), at(tm.taken), at(tm.started), at(tm.firstOutput))
	}
	tw.Flush()
	fmt.Fprintln(w)
}
