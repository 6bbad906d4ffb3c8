// leaf: a goroutine spending its time in a frameless leaf function, for the arm64 unwinding
// check. On arm64 a Go function that calls nothing and has no locals gets no frame: it does not
// save the link register (X30) or the frame pointer (X29), so while it runs its caller's return
// address is only in LR. A frame-pointer walk that ignores LR skips main.callsLeaf.
//
// It prints "goid leaf <id>", then "ready", and exits after -seconds or when stdin closes.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
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

// leaf burns CPU without calling anything: no frame on arm64.
//
//go:noinline
func leaf(x uint64) uint64 {
	for i := 0; i < 1000000; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

//go:noinline
func callsLeaf(stop <-chan struct{}) {
	x := uint64(3)
	for {
		x = leaf(x)
		sink += x
		select {
		case <-stop:
			return
		default:
		}
	}
}

func main() {
	seconds := flag.Float64("seconds", 30, "exit after this many seconds")
	flag.Parse()
	stop := make(chan struct{})
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		fmt.Printf("goid leaf %d\n", goid())
		close(ready)
		callsLeaf(stop)
		close(done)
	}()
	<-ready
	fmt.Println("ready")
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(stdinClosed)
	}()
	select {
	case <-time.After(time.Duration(*seconds * float64(time.Second))):
	case <-stdinClosed:
	}
	close(stop)
	<-done
}
