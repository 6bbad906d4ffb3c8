// Command stackgrow makes one goroutine grow its stack over and over, for stacksampler's
// system-stack test: it recurses -depth levels through frames of frameBytes (the runtime copies
// the stack at every doubling, in runtime.newstack/copystack on the thread's g0 stack), returns,
// lets the garbage collector shrink the stack back, and starts again.
//
// It prints "goid grower <id>", then "ready", and exits after -seconds or when stdin closes.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"
)

// frameBytes is the size of each recursive frame's local array.
const frameBytes = 4096

// shrinkCollections are the collections run between rounds: each halves an underused stack.
const shrinkCollections = 10

var sink byte

func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	if i := bytes.IndexByte(buf, ' '); i > 0 {
		id, err := strconv.ParseUint(string(buf[:i]), 10, 64)
		if err == nil {
			return id
		}
	}
	return 0
}

//go:noinline
func grow(n int) byte {
	var frame [frameBytes]byte
	frame[n%frameBytes] = byte(n)
	if n > 0 {
		frame[0] += grow(n - 1)
	}
	return frame[n%frameBytes] + frame[0]
}

func main() {
	seconds := flag.Int("seconds", 60, "exit after this many seconds")
	depth := flag.Int("depth", 1000, "recursion depth of each round")
	flag.Parse()

	ready := make(chan struct{})
	go func() {
		fmt.Printf("goid grower %d\n", goid())
		close(ready)
		for {
			sink += grow(*depth)
			for i := 0; i < shrinkCollections; i++ {
				runtime.GC()
			}
		}
	}()
	<-ready
	fmt.Println("ready")

	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
	case <-time.After(time.Duration(*seconds) * time.Second):
	}
}
