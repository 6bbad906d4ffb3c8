// Command agent is the target of stacksampler's agent tests: a CPU spinner, a goroutine that
// recurses -depth frames deep and spins at the bottom, and -parked goroutines blocked on a
// channel. It prints "goroutines N" (runtime.NumGoroutine once all are started), "frames N"
// (the deep goroutine's stack at the bottom, by runtime.Callers, with -depth), then "ready", and
// exits after -seconds or when stdin closes. Each "spawn" line on stdin starts -spawn goroutines
// that each recurse -grow-depth frames of about 1 KiB and end (with GODEBUG=adaptivestackstart=0
// each stack starts at 2 KiB and grows 6 times, to 128 KiB); then it prints "spawned N".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

var sink uint64

//go:noinline
func spin(n uint64) uint64 {
	for i := uint64(0); i < 1000000; i++ {
		n = n*6364136223846793005 + 1442695040888963407
	}
	return n
}

// bottomFrames receives the deep goroutine's frame count once it is at the bottom.
var bottomFrames = make(chan int, 1)

//go:noinline
func recurse(depth int) uint64 {
	if depth <= 1 {
		pcs := make([]uintptr, 1<<20)
		// Skip runtime.Callers itself: recurse... runtime.goexit.
		bottomFrames <- runtime.Callers(1, pcs)
		var n uint64
		for {
			n = spin(n)
			sink = n
		}
	}
	return recurse(depth-1) + 1
}

// grow recurses depth frames of about 1 KiB each.
//
//go:noinline
func grow(depth int) byte {
	var pad [1024]byte
	pad[depth%len(pad)] = byte(depth)
	if depth <= 1 {
		return pad[0]
	}
	return grow(depth-1) + pad[depth%len(pad)]
}

// spawn starts n goroutines that grow their stacks and waits for them to end.
func spawn(n, depth int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sink += uint64(grow(depth))
		}()
	}
	wg.Wait()
}

func main() {
	seconds := flag.Int("seconds", 60, "exit after this many seconds")
	depth := flag.Int("depth", 0, "recursion depth of the deep goroutine (0: none)")
	parked := flag.Int("parked", 0, "goroutines blocked on a channel")
	spawned := flag.Int("spawn", 100, "goroutines each \"spawn\" line on stdin starts")
	growDepth := flag.Int("grow-depth", 100, "frames of about 1 KiB each spawned goroutine recurses")
	flag.Parse()

	go func() {
		var n uint64
		for {
			n = spin(n)
			sink = n
		}
	}()
	if *depth > 0 {
		go recurse(*depth)
	}
	block := make(chan struct{})
	for i := 0; i < *parked; i++ {
		go func() { <-block }()
	}
	stdinClosed := make(chan struct{})
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			if lines.Text() == "spawn" {
				spawn(*spawned, *growDepth)
				fmt.Printf("spawned %d\n", *spawned)
			}
		}
		close(stdinClosed)
	}()
	// Let every goroutine start before counting.
	time.Sleep(100 * time.Millisecond)
	fmt.Printf("goroutines %d\n", runtime.NumGoroutine())
	if *depth > 0 {
		fmt.Printf("frames %d\n", <-bottomFrames)
	}
	fmt.Println("ready")
	select {
	case <-stdinClosed:
	case <-time.After(time.Duration(*seconds) * time.Second):
	}
}
