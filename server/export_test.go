package server

import "context"

// FillHostWrites holds the limit of hosts' writes, as a batch of
// bindings in flight does, and takes every slot, as that many writes
// running would, until the returned func gives them back.
func FillHostWrites(s *Server) (give func()) {
	s.hostWrites.hold()
	n := s.hostWrites.limit
	for range n {
		_ = s.hostWrites.acquire(context.Background(), "test")
	}
	return func() {
		for range n {
			s.hostWrites.release()
		}
		s.hostWrites.unhold()
	}
}

// HostWritesWaiting is how many hosts' writes wait their turn.
func HostWritesWaiting(s *Server) int {
	q := s.hostWrites
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, ws := range q.waiting {
		n += len(ws)
	}
	return n
}

// SetHostWriteLimit sets how many hosts' writes run at once while
// bindings are in flight (a fresh queue; none may be waiting).
func SetHostWriteLimit(s *Server, n int) { s.hostWrites = newFairQueue(n) }
