package server

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"time"

	"hearth.dev/hearth/server/auth"
)

// Hosts' writes wait their turn while the scheduler binds. A thousand
// agents reporting their VMs' status and events while the scheduler binds
// thousands of VMs would otherwise be a thousand requests on the server's
// cores at once (at 1,400 writes/s each took 0.8 s), every one a
// goroutine with an equal share of the CPU: the scheduler's batch of
// bindings, one request among them, got a thousandth. So, as Kubernetes'
// API Priority and Fairness does, hosts' writes (their status, events,
// reports) are one class with a concurrency limit, which holds while a
// batch of bindings is in flight: beyond it a write waits, as a parked
// goroutine that costs no CPU, until one finishes or the bindings are
// written. Everything else (the controllers' requests, people's, reads
// and watches, and a host's lease renewal, which must never wait behind
// its own VMs' writes or the host would be declared dead) goes at once.
//
// The limit holds only while bindings are in flight because a limit
// costs throughput: a write spends most of its time waiting for etcd (a
// read, then the commit), not on a core, and etcd commits concurrent
// writes together, so fewer at once means fewer per commit. With 1,000
// writers rewriting status, a limit held all the time halved the writes
// done per second (BenchmarkPlacementUnderHostWrites), and at 8 and 32
// per core a 300-host run's writes waited longer for their turn than for
// etcd. The limit is per core and generous (hostWritesPerCore); at a
// homelab's size no write ever waits. Waiting writes are served fairly
// between hosts (round robin over the hosts with writes waiting, in
// order within a host), so one host flooding the server delays its own
// writes, not the others'. Hearth's agents send at most eight writes
// at once (client.LimitWrites), so few wait here; the queue is for the
// scheduler's sake, and for hosts that send more.

// hostWritesPerCore is how many hosts' writes run at once per core.
const hostWritesPerCore = 64

// minHostWrites is the limit's floor, for a machine of one or two cores.
const minHostWrites = 128

// hostWriteLimit is how many hosts' writes run at once on this machine.
func hostWriteLimit() int { return max(minHostWrites, hostWritesPerCore*runtime.GOMAXPROCS(0)) }

// fairQueue admits up to limit requests at once while held (hold); the
// rest wait, served round robin between flows (a host each) and in order
// within a flow. Not held, it admits every request at once.
type fairQueue struct {
	mu    sync.Mutex
	limit int
	inUse int
	// holds counts the requests that hold the limit (hold): the
	// scheduler's bindings in flight.
	holds int
	// waiting holds each flow's waiters in order; ring the flows with
	// waiters, the next to be served first.
	waiting map[string][]*queued
	ring    []string
}

// queued is one request waiting: ready is closed when it is admitted.
type queued struct {
	ready   chan struct{}
	granted bool
}

func newFairQueue(limit int) *fairQueue {
	return &fairQueue{limit: limit, waiting: map[string][]*queued{}}
}

// acquire waits until the request of flow may run, or ctx ends (then it
// returns ctx's error and holds nothing). On success the caller must
// call release once it is done.
func (q *fairQueue) acquire(ctx context.Context, flow string) error {
	q.mu.Lock()
	if q.roomLocked() && len(q.ring) == 0 {
		q.inUse++
		q.mu.Unlock()
		return nil
	}
	w := &queued{ready: make(chan struct{})}
	if len(q.waiting[flow]) == 0 {
		q.ring = append(q.ring, flow)
	}
	q.waiting[flow] = append(q.waiting[flow], w)
	q.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	q.mu.Lock()
	if w.granted {
		// Admitted as it gave up: pass the slot on.
		q.mu.Unlock()
		q.release()
		return ctx.Err()
	}
	ws := q.waiting[flow]
	for i, o := range ws {
		if o == w {
			ws = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(q.waiting, flow)
		for i, f := range q.ring {
			if f == flow {
				q.ring = append(q.ring[:i:i], q.ring[i+1:]...)
				break
			}
		}
	} else {
		q.waiting[flow] = ws
	}
	q.mu.Unlock()
	return ctx.Err()
}

// roomLocked reports whether one more request may run now.
func (q *fairQueue) roomLocked() bool { return q.holds == 0 || q.inUse < q.limit }

// release ends a request admitted by acquire: the next waiting one (of
// the next flow in turn) takes its place.
func (q *fairQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inUse--
	q.admitLocked()
}

// hold makes the limit hold until the matching unhold: while a
// request that should go first (a batch of bindings) is in flight.
func (q *fairQueue) hold() {
	q.mu.Lock()
	q.holds++
	q.mu.Unlock()
}

// unhold ends a hold; the last one lets every waiting request run.
func (q *fairQueue) unhold() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.holds--
	q.admitLocked()
}

// admitLocked admits waiting requests, each flow in turn, while there is
// room.
func (q *fairQueue) admitLocked() {
	for len(q.ring) > 0 && q.roomLocked() {
		flow := q.ring[0]
		q.ring = q.ring[1:]
		ws := q.waiting[flow]
		w := ws[0]
		if len(ws) == 1 {
			delete(q.waiting, flow)
		} else {
			q.waiting[flow] = ws[1:]
			q.ring = append(q.ring, flow) // its next waits for the others' turn
		}
		q.inUse++
		w.granted = true
		close(w.ready)
	}
}

// queuedForHosts runs h at once, except a host's write, which waits its
// turn in s.hostWrites (and its wait is recorded).
func (s *Server) queuedForHosts(h func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error) func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		if !p.HostCredential() || !isWrite(r.Method) {
			return h(w, r, p)
		}
		flow := p.Host
		if flow == "" {
			flow = "boot service " + p.Boot
		}
		start := time.Now()
		if err := s.hostWrites.acquire(r.Context(), flow); err != nil {
			return err
		}
		defer s.hostWrites.release()
		s.metrics.hostWriteWait.Observe(time.Since(start).Seconds())
		return h(w, r, p)
	}
}

// isWrite reports whether method changes something.
func isWrite(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}
