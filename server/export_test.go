package server

import (
	"context"

	api "hearth.dev/hearth/api/v1alpha1"
)

// FillHostWrites takes every slot of hosts' writes, as that many writes
// running would, until the returned func gives them back.
func FillHostWrites(s *Server) (give func()) {
	n := s.hostWrites.limit
	for range n {
		_ = s.hostWrites.acquire(context.Background(), "test")
	}
	return func() {
		for range n {
			s.hostWrites.release()
		}
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

// SetInvolvedCache makes get the cache a host's event's object is read
// from (in place of the controllers' informers).
func SetInvolvedCache(s *Server, get func(kind, key string) (api.Object, bool)) {
	s.involvedCache = get
}
