package cli

import (
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
)

// cpuPhases lets a measuring harness profile one phase of a run alone
// (hearth bench scale times placement this way): each next ends the CPU
// profile being written to f and starts the next one in NAME.1, NAME.2,
// …; stop ends the last one. The server calls next at each SIGUSR1.
func cpuPhases(name string, f *os.File) (next, stop func()) {
	var mu sync.Mutex
	cur, n, stopped := f, 0, false
	next = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if cur != nil {
			pprof.StopCPUProfile()
			cur.Close()
		}
		n++
		nf, err := os.Create(fmt.Sprintf("%s.%d", name, n))
		if err == nil {
			if err = pprof.StartCPUProfile(nf); err != nil {
				nf.Close()
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "--cpuprofile: %v\n", err)
			nf = nil
		}
		cur = nf
	}
	stop = func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if cur != nil {
			pprof.StopCPUProfile()
			cur.Close()
			cur = nil
		}
	}
	return next, stop
}
