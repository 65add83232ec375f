package bench

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"hearth.dev/hearth/client"
)

// memGauges are the Go runtime's figures the bench samples from each
// server's /metrics through a run: what the heap's spans in use and the
// goroutines' stacks came to, and how many goroutines there were.
var memGauges = []string{
	"go_memstats_heap_inuse_bytes",
	"go_memstats_heap_alloc_bytes",
	"go_memstats_stack_inuse_bytes",
	"go_goroutines",
}

// MemPhase is the most a server used during one phase of a run, from
// samples of its /metrics and /proc (summed over live servers; each
// figure's own peak, so they need not be of the same moment).
type MemPhase struct {
	Phase string
	// HeapInuse is the heap's spans in use (live objects, the garbage
	// not yet collected, and the spans' free slots); HeapAlloc the
	// objects' bytes of that, live or not yet collected.
	HeapInuse, HeapAlloc int64
	Stacks               int64
	Goroutines           int64
	RSS                  int64
	Samples              int
}

// memSampler samples the servers' memory every interval and keeps each
// phase's peak. The phase is what the run says it is doing (setPhase).
type memSampler struct {
	r        *scaleRun
	mu       sync.Mutex
	phases   []*MemPhase
	clients  map[*serverProc]*client.Client
	interval time.Duration
	// peakSnap and peakAt are the goroutines and the time of the last
	// peak profile (scaleRun.cfg.ServerPlacingProfile).
	peakSnap int64
	peakAt   time.Time
}

// placingPhase is the phase whose peak ServerPlacingProfile profiles.
const placingPhase = "placement until Running"

func newMemSampler(r *scaleRun, interval time.Duration) *memSampler {
	return &memSampler{r: r, clients: map[*serverProc]*client.Client{}, interval: interval}
}

// setPhase starts a phase: samples from now on count toward it.
func (m *memSampler) setPhase(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phases = append(m.phases, &MemPhase{Phase: name})
}

// run samples until ctx ends.
func (m *memSampler) run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	defer func() {
		for _, c := range m.clients {
			c.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.sampleOnce(ctx)
	}
}

func (m *memSampler) sampleOnce(ctx context.Context) {
	var s MemPhase
	for _, p := range m.r.servers {
		if !p.alive() {
			continue
		}
		if st, err := readProc(p.cmd.Process.Pid); err == nil {
			s.RSS += st.rss
		}
		c := m.clients[p]
		if c == nil {
			var err error
			if c, err = p.client(); err != nil {
				continue
			}
			m.clients[p] = c
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		text, err := c.GetRaw(sctx, "/metrics")
		cancel()
		if err != nil {
			continue
		}
		g := parseGauges(string(text), memGauges...)
		s.HeapInuse += int64(g["go_memstats_heap_inuse_bytes"])
		s.HeapAlloc += int64(g["go_memstats_heap_alloc_bytes"])
		s.Stacks += int64(g["go_memstats_stack_inuse_bytes"])
		s.Goroutines += int64(g["go_goroutines"])
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.phases) == 0 {
		return
	}
	p := m.phases[len(m.phases)-1]
	if p.Phase == placingPhase && s.Goroutines > p.Goroutines {
		m.peakProfileLocked(s.Goroutines)
	}
	p.HeapInuse = max(p.HeapInuse, s.HeapInuse)
	p.HeapAlloc = max(p.HeapAlloc, s.HeapAlloc)
	p.Stacks = max(p.Stacks, s.Stacks)
	p.Goroutines = max(p.Goroutines, s.Goroutines)
	p.RSS = max(p.RSS, s.RSS)
	p.Samples++
}

// peakProfileLocked has the servers write their heap and goroutines
// (SIGUSR2: NAME.heap.pprof.peak) at a new most goroutines in the
// placement, 5% above the last profile's and at least two seconds after
// it; the last written is of the phase's peak, or near it.
func (m *memSampler) peakProfileLocked(goroutines int64) {
	if !m.r.cfg.ServerPlacingProfile || goroutines < m.peakSnap*21/20 || time.Since(m.peakAt) < 2*time.Second {
		return
	}
	m.peakSnap, m.peakAt = goroutines, time.Now()
	for _, p := range m.r.servers {
		if p.alive() && p.heapProfile != "" {
			_ = p.cmd.Process.Signal(syscall.SIGUSR2)
			m.r.logf("server %s writes its heap and goroutines (%d goroutines): %s.peak", p.name, goroutines, p.heapProfile)
		}
	}
}

// result is every phase's peaks, in the run's order.
func (m *memSampler) result() []MemPhase {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]MemPhase, 0, len(m.phases))
	for _, p := range m.phases {
		out = append(out, *p)
	}
	return out
}

// String is a phase's peaks as the report prints them.
func (p MemPhase) String() string {
	if p.Samples == 0 {
		return "no sample"
	}
	return fmt.Sprintf("heap in use %s (objects %s), stacks %s, %d goroutines, RSS %s (%d samples)",
		mib(p.HeapInuse), mib(p.HeapAlloc), mib(p.Stacks), p.Goroutines, mib(p.RSS), p.Samples)
}

// parseGauges reads the named unlabelled series from Prometheus's text
// format.
func parseGauges(text string, names ...string) map[string]float64 {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok || !want[name] {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[name] = f
		}
	}
	return out
}
