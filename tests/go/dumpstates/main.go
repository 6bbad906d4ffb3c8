// dumpstates parks goroutines in known states, writes the runtime's own goroutine dump
// (runtime/pprof, debug=2) to the file named by -dump, prints "ready" and stays still until
// stdin closes. The test compares stacksampler's dump of it with the runtime's.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"
)

var spinCount uint64

//go:noinline
func chanReceive(ch chan int) { <-ch }

//go:noinline
func chanSend(ch chan int) { ch <- 1 }

//go:noinline
func selectCases(a, b chan int) {
	select {
	case <-a:
	case b <- 1:
	}
}

//go:noinline
func selectEmpty() { select {} }

//go:noinline
func mutexWait(mu *sync.Mutex) { mu.Lock() }

//go:noinline
func condWait(c *sync.Cond) {
	c.L.Lock()
	c.Wait()
}

//go:noinline
func sleeper() { time.Sleep(time.Hour) }

//go:noinline
func pipeRead(r *os.File) {
	buf := make([]byte, 1)
	r.Read(buf)
}

//go:noinline
func syscallRead(fd int) {
	buf := make([]byte, 1)
	syscall.Read(fd, buf)
}

//go:noinline
func spin() {
	for {
		spinCount++
	}
}

//go:noinline
func labelled(ch chan int) {
	pprof.Do(context.Background(), pprof.Labels("worker", "w1"), func(context.Context) {
		chanReceive(ch)
	})
}

//go:noinline
func locked(ch chan int) {
	runtime.LockOSThread()
	<-ch
}

//go:noinline
func leak(ch chan int, depth int) {
	if depth > 0 {
		leak(ch, depth-1)
		return
	}
	<-ch
}

//go:noinline
func deepRecurse(ch chan int, n int) {
	if n > 0 {
		deepRecurse(ch, n-1)
		return
	}
	<-ch
}

func main() {
	dump := flag.String("dump", "", "file for the runtime's goroutine dump (debug=2)")
	extra := flag.Int("extra", 0, "extra goroutines parked in chan receive")
	deep := flag.Int("deep", 0, "a goroutine parked under this many calls of deepRecurse")
	flag.Parse()

	// Never closed or sent on: the extra goroutines stay parked.
	never := make(chan int)
	var mu sync.Mutex
	mu.Lock()
	cond := sync.NewCond(&sync.Mutex{})
	pr, pw, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		panic(err)
	}
	before := runtime.NumGoroutine()
	// One channel per goroutine: two goroutines on one channel would pair up and leave.
	go chanReceive(make(chan int))
	go chanSend(make(chan int))
	go selectCases(make(chan int), make(chan int))
	go selectEmpty()
	go mutexWait(&mu)
	go condWait(cond)
	go sleeper()
	go pipeRead(pr)
	go syscallRead(fds[0])
	go spin()
	go labelled(make(chan int))
	go locked(make(chan int))
	for i := 0; i < *extra; i++ {
		go leak(never, i%3)
	}
	want := before + 12 + *extra
	if *deep > 0 {
		go deepRecurse(make(chan int), *deep)
		want++
	}
	for runtime.NumGoroutine() < want {
		time.Sleep(10 * time.Millisecond)
	}
	// Let every goroutine reach its blocking point.
	time.Sleep(300 * time.Millisecond)
	if *dump != "" {
		f, err := os.Create(*dump)
		if err != nil {
			panic(err)
		}
		if err := pprof.Lookup("goroutine").WriteTo(f, 2); err != nil {
			panic(err)
		}
		f.Close()
	}
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	for {
		if _, err := in.ReadString('\n'); err != nil {
			break
		}
	}
	pw.Close()
	syscall.Close(fds[1])
}
