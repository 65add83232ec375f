package cli

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
)

// profilePhases lets a measuring harness profile one phase of a run
// alone (hearth bench scale times placement this way): each SIGUSR1
// ends the CPU profile being written to f and starts the next one in
// NAME.1, NAME.2, …. The returned func ends the last one.
func profilePhases(name string, f *os.File) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	var mu sync.Mutex
	cur := f
	go func() {
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-sig:
			}
			mu.Lock()
			pprof.StopCPUProfile()
			cur.Close()
			next, err := os.Create(fmt.Sprintf("%s.%d", name, n))
			if err == nil {
				if err = pprof.StartCPUProfile(next); err != nil {
					next.Close()
				}
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "--cpuprofile: %v\n", err)
				next = nil
			}
			cur = next
			mu.Unlock()
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		mu.Lock()
		defer mu.Unlock()
		if cur != nil {
			pprof.StopCPUProfile()
			cur.Close()
		}
	}
}
