// Package reconcile is the room for Hearth's control-loop machinery: the one
// reconcile loop helper every controller in the server and the agents uses.
//
// Hearth is level-triggered everywhere. A controller does not act on events;
// it is told which key (an object's name, a VM, a network) may have changed,
// and its Reconciler reads what is, compares it with what should be and makes
// the smallest change. Because only the key is queued, ten changes to one
// object before a worker gets to it cost one reconcile, and a missed event is
// repaired by the next periodic resync.
//
// The pieces:
//
//   - Queue holds keys waiting to be reconciled. A key waits at most once, is
//     never handed to two workers at the same time, and failed keys come back
//     with per-key exponential backoff, which holds whatever enqueues them
//     meanwhile (a failing reconcile's own writes, seen by its own watches,
//     cannot make it spin) until a change to what the key asks for
//     (EnqueueNow) or a success.
//   - Controller runs workers over a Queue, retries errors, honours
//     Result.RequeueAfter, recovers panics and periodically lists every key
//     to repair drift. Errors wrapped with Terminal are logged, not retried.
//   - Reverter undoes the completed steps of a multi-step host change (a
//     bridge, then a tap, then nftables rules) when a later step fails, so a
//     failed reconcile leaves the host as it found it.
//
// Time comes from a Clock so tests can drive backoff, RequeueAfter and resync
// with a fake clock instead of sleeping.
package reconcile
