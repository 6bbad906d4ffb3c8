// deep: the stack shapes a stack-overflow hunt meets.
//
//	-mode mutual   recA <-> recB recursion -depth frames deep, spinning at the bottom
//	-mode stringer a String method that recurses through fmt.Sprintf -depth times, then spins
//	-mode overflow unbounded recursion under debug.SetMaxStack(-maxstack): dies with
//	               "fatal error: stack overflow" (starts when a line arrives on stdin)
//	-mode shallow  a CPU-bound loop a few frames deep
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
	"runtime/debug"
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

//go:noinline
func spin() {
	x := uint64(3)
	for {
		for i := 0; i < 1000000; i++ {
			x = x*2862933555777941757 + 3037000493
		}
		sink += x
	}
}

//go:noinline
func recA(n int) int {
	if n <= 0 {
		spin()
	}
	return recB(n-1) + 1
}

//go:noinline
func recB(n int) int {
	if n <= 0 {
		spin()
	}
	return recA(n-1) + 1
}

var stringerLeft int

type T struct{ n int }

// String recurses through fmt: String -> Sprintf -> doPrintf -> printArg -> handleMethods -> String.
func (t T) String() string {
	if stringerLeft <= 0 {
		spin()
	}
	stringerLeft--
	return fmt.Sprintf("%v", t)
}

//go:noinline
func overflow(n int) int {
	// A little work per frame so the stack grows over seconds, not milliseconds.
	x := uint64(n)
	for i := 0; i < 2000; i++ {
		x = x*6364136223846793005 + 1
	}
	sink += x
	return overflow(n+1) + 1
}

//go:noinline
func shallowWork() {
	spin()
}

func main() {
	mode := flag.String("mode", "mutual", "mutual, stringer, overflow or shallow")
	depth := flag.Int("depth", 20000, "recursion depth (mutual, stringer)")
	maxStack := flag.Int("maxstack", 64<<20, "debug.SetMaxStack for -mode overflow")
	seconds := flag.Float64("seconds", 60, "exit after this many seconds")
	flag.Parse()

	started := make(chan struct{})
	go func() {
		fmt.Printf("goid %d\n", goid())
		close(started)
		switch *mode {
		case "mutual":
			recA(*depth)
		case "stringer":
			stringerLeft = *depth
			_ = T{1}.String()
		case "overflow":
			debug.SetMaxStack(*maxStack)
			// Wait for the sampler: a line on stdin starts the runaway recursion.
			bufio.NewReader(os.Stdin).ReadString('\n')
			overflow(0)
		case "shallow":
			shallowWork()
		default:
			fmt.Fprintf(os.Stderr, "unknown mode %q\n", *mode)
			os.Exit(2)
		}
	}()
	<-started
	fmt.Println("ready")
	if *mode == "overflow" {
		time.Sleep(time.Duration(*seconds * float64(time.Second)))
		return
	}
	closed := make(chan struct{})
	go func() {
		bufio.NewReader(os.Stdin).ReadString(0)
		close(closed)
	}()
	select {
	case <-time.After(time.Duration(*seconds * float64(time.Second))):
	case <-closed:
	}
}
