package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// A client's writes in flight can be limited (LimitWrites): an agent
// starting its VMs writes each one's status and events from a dozen
// goroutines or more, and when a thousand agents do so while the
// scheduler binds, the server holds every one of those requests at once
// (a goroutine and its stack, the stream, the body and what the handler
// decoded), most of them parked in its queue for hosts' writes
// (server/fairqueue.go) behind the others. The server does not go
// faster for holding them: its cores and etcd are what they wait for.
// Limited, the writes beyond the limit wait in the agent's process
// instead, in order, and the server's memory at its busiest no longer
// grows with how many writers each host runs.

// writeWaitLimit is how long a write waits for its turn before it fails
// saying so: as long as the request itself may take (New's Timeout),
// so that a server that stopped answering is reported, and backed off
// from, as it would be without the limit.
const writeWaitLimit = 60 * time.Second

// LimitWrites returns a copy of the client that has at most n writes
// (POST, PUT, PATCH, DELETE) in flight at once; the others wait their
// turn in order, each for at most a minute. Copies made of it (DryRun,
// WithWarnings) share the limit; Unlimited makes one outside it.
func (c *Client) LimitWrites(n int) *Client {
	cc := *c
	cc.writes = make(chan struct{}, max(n, 1))
	return &cc
}

// Unlimited returns a copy of the client whose writes never wait for
// those of the limit (LimitWrites): for a request that must not wait
// behind the others, as a host's lease renewal must not wait behind its
// VMs' writes.
func (c *Client) Unlimited() *Client {
	cc := *c
	cc.writes = nil
	return &cc
}

// writeTurn waits until a write of method may be sent, if the client
// limits its writes, and returns what ends its turn (nil if it took
// none).
func (c *Client) writeTurn(ctx context.Context, method string) (done func(), err error) {
	if c.writes == nil || !isWrite(method) {
		return nil, nil
	}
	select {
	case c.writes <- struct{}{}:
		return func() { <-c.writes }, nil
	default:
	}
	t := time.NewTimer(writeWaitLimit)
	defer t.Stop()
	select {
	case c.writes <- struct{}{}:
		return func() { <-c.writes }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, fmt.Errorf("%s %s: waited %s for one of this client's %d writes in flight to end: the server answers too slowly, or not at all",
			method, c.base, writeWaitLimit, cap(c.writes))
	}
}

// endsTurn returns body, which ends the write's turn (done) when closed:
// a write is in flight until its answer is read, as the server is not
// done with it before. Every write's answer is closed (Do, patch).
func endsTurn(body io.ReadCloser, done func()) io.ReadCloser {
	if done == nil {
		return body
	}
	return &turnBody{ReadCloser: body, done: done}
}

// turnBody is an answer's body that ends its write's turn when closed.
type turnBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *turnBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// isWrite reports whether method changes something.
func isWrite(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}
