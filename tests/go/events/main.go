// events: test program for stacksampler's runtime events (--watch).
//
// Every mode prints what the test checks against, then waits for a line on stdin before doing
// its work, so the probes are attached first. Every mode ends by itself.
//
//	-mode grow      one goroutine recurses in doubling steps until its stack passes 2 MiB
//	-mode leak      starts -rate goroutines per second for -seconds; they never end
//	-mode overflow  recursion with debug.SetMaxStack lowered: dies with "fatal error: stack overflow"
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// frame keeps each recursion frame at a fixed, non-trivial size.
type frame [8]uint64

var sink uint64

//go:noinline
func recurse(n int) uint64 {
	var f frame
	f[n%8] = uint64(n)
	if n <= 0 {
		return f[0]
	}
	r := recurse(n-1) + f[n%8]
	sink += r
	return r
}

func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	s := strings.TrimPrefix(string(buf), "goroutine ")
	id, _ := strconv.ParseUint(s[:strings.IndexByte(s, ' ')], 10, 64)
	return id
}

func waitGo() {
	r := bufio.NewReader(os.Stdin)
	_, _ = r.ReadString('\n')
}

func grow(maxDepth int) {
	debug.SetGCPercent(-1) // no stack shrinking between the steps
	ids := make(chan uint64)
	start := make(chan struct{})
	done := make(chan int)
	go func() {
		ids <- goid()
		<-start
		depth := 1
		for ; depth <= maxDepth; depth *= 2 {
			recurse(depth)
			time.Sleep(20 * time.Millisecond)
		}
		done <- depth / 2
	}()
	fmt.Printf("goid %d\n", <-ids)
	fmt.Println("ready")
	waitGo()
	close(start)
	fmt.Printf("done depth %d\n", <-done)
}

//go:noinline
func leak(block chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { // LEAK-SITE
		wg.Done()
		<-block
	}()
}

//go:noinline
func shortLived(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { wg.Done() }()
}

func leakMode(rate int, seconds float64) {
	fmt.Println("ready")
	waitGo()
	block := make(chan struct{})
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	n := int(float64(rate) * seconds)
	for i := 0; i < n; i++ {
		<-tick.C
		leak(block, &wg)
		shortLived(&wg)
	}
	wg.Wait()
	fmt.Printf("leaked %d\n", n)
}

//go:noinline
func overflow(n int) uint64 {
	var f frame
	f[n%8] = uint64(n)
	return overflow(n+1) + f[n%8]
}

func main() {
	mode := flag.String("mode", "grow", "grow, leak or overflow")
	maxDepth := flag.Int("depth", 32768, "grow: deepest recursion step")
	rate := flag.Int("rate", 50, "leak: goroutines per second")
	seconds := flag.Float64("seconds", 4, "leak: seconds")
	maxStack := flag.Int("maxstack", 4<<20, "overflow: debug.SetMaxStack bytes")
	flag.Parse()
	switch *mode {
	case "grow":
		grow(*maxDepth)
	case "leak":
		leakMode(*rate, *seconds)
	case "overflow":
		debug.SetMaxStack(*maxStack)
		fmt.Println("ready")
		waitGo()
		fmt.Println(overflow(0))
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", *mode)
		os.Exit(3)
	}
}
