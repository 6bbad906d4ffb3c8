// deepwalk: a deep recursion whose outer part changes between samples while its frames are
// rebuilt at the same addresses, the case an early stop of the kernel walk at a remembered
// frame would get wrong.
//
// One goroutine descends -outer frames (main.outer), then calls main.fork, which calls
// main.inner from one of two call sites (siteA or siteB), -inner frames more, down to a leaf
// that spins for -spin microseconds: main.leafA under siteA, main.leafB under siteB. Then it
// returns all the way up to main.fork's caller and descends again through the other site.
// Every frame record above main.fork (saved frame pointer and return address) is rebuilt
// with the same words at the same addresses; only main.fork's return address into main.inner
// and the leaf's own pc differ between the two phases (the leaf is called from one site). A sample whose leaf is main.leafA must show
// main.fork at siteA, and main.leafB at siteB.
//
// It prints "goid <id>" and "ready", and exits after -seconds or when stdin closes.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

var sink uint64

func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	fields := bytes.Fields(buf)
	if len(fields) < 2 {
		return 0
	}
	id, _ := strconv.ParseUint(string(fields[1]), 10, 64)
	return id
}

// spinFor burns CPU for about n microseconds (no clock call: the leaf stays on top).
func spinFor(n int) {
	x := uint64(3)
	for j := 0; j < n; j++ {
		for i := 0; i < 1000; i++ {
			x = x*2862933555777941757 + 3037000493
		}
	}
	sink += x
}

//go:noinline
func leafA(n int) int {
	spinFor(n)
	return 1
}

//go:noinline
func leafB(n int) int {
	spinFor(n)
	return 2
}

// inner descends n frames and calls the leaf from one call site (an indirect call), so the
// leaf's return address is the same in both phases.
//
//go:noinline
func inner(n int, leaf func(int) int, spin int) int {
	if n <= 0 {
		return leaf(spin)
	}
	return inner(n-1, leaf, spin) + 1
}

//go:noinline
func fork(n int, b bool, spin int) int {
	if b {
		return inner(n, leafB, spin) + 2 // siteB
	}
	return inner(n, leafA, spin) + 1 // siteA
}

// outer descends n frames, then alternates between the two sites forever.
//
//go:noinline
func outer(n, innerDepth, spin int) int {
	if n <= 0 {
		b := false
		for {
			sink += uint64(fork(innerDepth, b, spin))
			b = !b
		}
	}
	return outer(n-1, innerDepth, spin) + 1
}

func main() {
	outerDepth := flag.Int("outer", 2000, "frames above main.fork")
	innerDepth := flag.Int("inner", 3000, "frames below main.fork")
	spin := flag.Int("spin", 700, "about how many microseconds each leaf spins")
	seconds := flag.Int("seconds", 60, "exit after this many seconds")
	flag.Parse()

	ids := make(chan uint64)
	go func() {
		ids <- goid()
		outer(*outerDepth, *innerDepth, *spin)
	}()
	fmt.Printf("goid %d\n", <-ids)
	// Let the stack grow to its full size before sampling starts.
	time.Sleep(200 * time.Millisecond)
	fmt.Println("ready")

	done := make(chan struct{})
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n')
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Duration(*seconds) * time.Second):
	}
}
