package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"hearth.dev/hearth/reconcile"
)

// A controller that keeps VMs in their desired power state. The reconciler
// is given only a VM's name: it looks at what should be and what is, and
// makes the smallest change, so it does not matter how many events led
// here or whether it ran before.
func Example() {
	shouldRun := map[string]bool{"web": true, "db": true} // desired state
	running := map[string]bool{"db": true, "old": true}   // actual state

	ctx, cancel := context.WithCancel(context.Background())
	left := 3 // Stop the example once every VM was looked at.

	c := &reconcile.Controller{
		Name:    "vm-power",
		Workers: 1, // One worker keeps this example's output in order.
		Logger:  slog.New(slog.DiscardHandler),
		Reconciler: reconcile.ReconcilerFunc(func(ctx context.Context, vm string) (reconcile.Result, error) {
			defer func() {
				if left--; left == 0 {
					cancel()
				}
			}()
			switch {
			case shouldRun[vm] && !running[vm]:
				running[vm] = true
				fmt.Println("started", vm)
			case !shouldRun[vm] && running[vm]:
				delete(running, vm)
				fmt.Println("stopped", vm)
			default:
				fmt.Println(vm, "is as it should be")
			}
			return reconcile.Result{}, nil
		}),
	}

	// A watch on VM objects or QEMU processes would call Enqueue.
	for _, vm := range []string{"web", "db", "old", "web"} {
		c.Enqueue(vm) // "web" is already waiting: queued once.
	}
	if err := c.Run(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// started web
	// db is as it should be
	// stopped old
}

// A multi-step host change that undoes its completed steps when a later
// one fails.
func ExampleReverter() {
	addRules := func() error { return errors.New("nftables: table hearth not found") }
	attachVM := func() error {
		r := reconcile.NewReverter()
		defer r.Fail()

		fmt.Println("create tap-web")
		r.Add(func() error { fmt.Println("delete tap-web"); return nil })

		fmt.Println("attach tap-web to br-a")
		r.Add(func() error { fmt.Println("detach tap-web from br-a"); return nil })

		if err := addRules(); err != nil {
			return fmt.Errorf("add anti-spoofing rules for tap-web: %w", err)
		}
		r.Success()
		return nil
	}

	fmt.Println("error:", attachVM())
	// Output:
	// create tap-web
	// attach tap-web to br-a
	// detach tap-web from br-a
	// delete tap-web
	// error: add anti-spoofing rules for tap-web: nftables: table hearth not found
}
