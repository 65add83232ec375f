package controllers

import (
	"hearth.dev/hearth/client"
	"hearth.dev/hearth/reconcile"
)

// enqueueOwn is how a controller hears of a change to an object of the
// kind it reconciles (keyed as the informer keys it, with prefix before):
// a change of its spec or metadata, or the object coming or going, is
// worked on at once, even while its key backs off after a failure
// (reconcile.Controller.EnqueueNow); a change of its status alone — its
// own write coming back through its watch, or another writer's — waits
// for any backoff, so a failing key never spins on its own writes.
func enqueueOwn(ctl *reconcile.Controller, prefix string) func(client.Change) {
	return func(ch client.Change) {
		if ch.StatusOnly() {
			ctl.Enqueue(prefix + ch.Key)
		} else {
			ctl.EnqueueNow(prefix + ch.Key)
		}
	}
}
