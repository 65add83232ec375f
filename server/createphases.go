package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// createPhases time a VirtualMachine's create in the server, phase by
// phase, so that a create's latency as a client sees it (issue 16's
// watch fan-out figure starts at sending it) can be split into the
// server's work and the rest (the connection, the client's process):
//
//   - read: the request's body read and decoded;
//   - admit: authorization, validation and the admission checks (the
//     tenant, quotas), with their reads;
//   - write: the store's create: IPAM's reads and the transaction
//     (raft, the disk's sync);
//   - answer: the warnings and the answer written.
//
// Only VMs: the kind the fan-out creates, and the one whose create
// reads the most.
type createPhases struct {
	h *prometheus.HistogramVec
}

func newCreatePhases(reg prometheus.Registerer) *createPhases {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hearth_api_vm_create_phase_seconds",
		Help:    "A VirtualMachine create's time in the server by phase (read: its body; admit: authorization and admission; write: IPAM and the transaction; answer: warnings and the answer).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"phase"})
	reg.MustRegister(h)
	return &createPhases{h: h}
}

// phaseClock times one create's phases: lap ends a phase begun at the
// last lap (or at the clock's start). It travels in the request's
// context (phaseClockOf), so the functions a create calls lap it
// themselves: readObject, admit, writeWarnings (every create of a VM
// that succeeds calls it; it returns at once for an object with no
// references) and serveObjects once create returns.
type phaseClock struct {
	p    *createPhases
	last time.Time
	// wrote is set once the write's lap is taken: the answer is timed
	// only after a write (a refused create has none).
	wrote bool
}

type phaseClockKey struct{}

// start returns ctx with a clock for one create, if on; a nil clock
// (nothing timed) otherwise.
func (p *createPhases) start(ctx context.Context, on bool) (context.Context, *phaseClock) {
	if p == nil || !on {
		return ctx, nil
	}
	c := &phaseClock{p: p, last: time.Now()}
	return context.WithValue(ctx, phaseClockKey{}, c), c
}

// phaseClockOf is the create's clock in ctx, or nil.
func phaseClockOf(ctx context.Context) *phaseClock {
	c, _ := ctx.Value(phaseClockKey{}).(*phaseClock)
	return c
}

func (c *phaseClock) lap(phase string) {
	if c == nil || (phase == "answer" && !c.wrote) {
		return
	}
	now := time.Now()
	c.p.h.WithLabelValues(phase).Observe(now.Sub(c.last).Seconds())
	c.last = now
	c.wrote = c.wrote || phase == "write"
}
