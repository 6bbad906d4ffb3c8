// cgomix: mixed Go and C stacks. One goroutine calls C (cgo) which recurses 40 levels and calls
// back into Go, which recurses 30 levels and spins; another goroutine spins inside libc
// (strtod) called from C. Both C parts are compiled at cgo's default -O2 (no frame pointers).
//
// -mode picks what runs: "both" (default), "callback", "libc", or "go" (a pure-Go spinner in
// this cgo binary, for the benchmark's cost of samples without a native part). It prints
// "ready" once they run, and exits after -seconds.
package main

/*
extern volatile int c_stop;
int c_entry(int depth);
void c_libc_loop(void);
*/
import "C"

import (
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

const (
	cDepth  = 40
	goDepth = 30
)

var (
	stop    atomic.Bool
	running sync.WaitGroup
	sink    uint64
)

//go:noinline
func goSpin() {
	running.Done()
	x := uint64(1)
	for !stop.Load() {
		for i := 0; i < 100000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		sink += x
	}
}

//go:noinline
func goRec(n int) int {
	if n <= 1 {
		goSpin()
		return 1
	}
	return goRec(n-1) + 1
}

//export goCallback
func goCallback() {
	goRec(goDepth)
}

//go:noinline
func callC() {
	C.c_entry(cDepth)
}

//go:noinline
func callbackEntry(done *sync.WaitGroup) {
	defer done.Done()
	callC()
}

//go:noinline
func libcLoop() {
	C.c_libc_loop()
}

//go:noinline
func libcEntry(done *sync.WaitGroup) {
	defer done.Done()
	libcLoop()
}

//go:noinline
func goEntry(done *sync.WaitGroup) {
	defer done.Done()
	goRec(goDepth)
}

func main() {
	seconds := flag.Float64("seconds", 10, "run time")
	mode := flag.String("mode", "both", "both, callback, libc or go")
	flag.Parse()
	var done sync.WaitGroup
	switch *mode {
	case "both":
		running.Add(1)
		done.Add(2)
		go callbackEntry(&done)
		go libcEntry(&done)
	case "callback":
		running.Add(1)
		done.Add(1)
		go callbackEntry(&done)
	case "libc":
		done.Add(1)
		go libcEntry(&done)
	case "go":
		running.Add(1)
		done.Add(1)
		go goEntry(&done)
	default:
		fmt.Println("unknown -mode", *mode)
		return
	}
	running.Wait()
	fmt.Println("ready")
	time.Sleep(time.Duration(*seconds * float64(time.Second)))
	stop.Store(true)
	C.c_stop = 1
	done.Wait()
}
