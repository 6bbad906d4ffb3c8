// demo: a small Go program with the shapes stacksampler is built to find, used by `cargo xtask
// demo` and by the end-to-end tests.
//
//   - main.hotLoop: a goroutine burning CPU in one known function;
//   - main.recurseA: a goroutine that recurses -depth frames deep and spins at the bottom
//     (main.spinAtBottom);
//   - main.syscallLoop: a goroutine reading /dev/zero in a loop (state Gsyscall in the kernel).
//
// It prints "goid <role> <id>" for each worker, then "ready", and exits by itself after -seconds
// or when its standard input closes, whichever comes first.
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
	"sync"
	"syscall"
	"time"
)

var sink uint64

func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	// "goroutine 18 [running]:..."
	fields := bytes.Fields(buf)
	if len(fields) < 2 {
		return 0
	}
	id, _ := strconv.ParseUint(string(fields[1]), 10, 64)
	return id
}

//go:noinline
func hotLoop(stop <-chan struct{}) {
	x := uint64(1)
	for {
		for i := 0; i < 1000000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		sink += x
		select {
		case <-stop:
			return
		default:
		}
	}
}

//go:noinline
func spinAtBottom(stop <-chan struct{}) {
	x := uint64(7)
	for {
		for i := 0; i < 1000000; i++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
		sink += x
		select {
		case <-stop:
			return
		default:
		}
	}
}

//go:noinline
func recurseA(n int, stop <-chan struct{}) int {
	if n <= 0 {
		spinAtBottom(stop)
		return 0
	}
	return recurseB(n-1, stop) + 1
}

//go:noinline
func recurseB(n int, stop <-chan struct{}) int {
	if n <= 0 {
		spinAtBottom(stop)
		return 0
	}
	return recurseA(n-1, stop) + 1
}

//go:noinline
func syscallLoop(stop <-chan struct{}) {
	f, err := os.Open("/dev/zero")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	buf := make([]byte, 1<<20)
	for {
		// syscall.Read enters the kernel through entersyscall: the goroutine is _Gsyscall
		// while the kernel fills the buffer.
		if _, err := syscall.Read(fd, buf); err != nil {
			panic(err)
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

func main() {
	depth := flag.Int("depth", 3000, "recursion depth of the recursing goroutine")
	seconds := flag.Float64("seconds", 30, "exit after this many seconds")
	workers := flag.String("workers", "hot,recurse,syscall", "which workers to start")
	flag.Parse()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := func(role string, f func()) {
		wg.Add(1)
		ready := make(chan struct{})
		go func() {
			defer wg.Done()
			mu.Lock()
			fmt.Printf("goid %s %d\n", role, goid())
			mu.Unlock()
			close(ready)
			f()
		}()
		<-ready
	}
	for _, w := range bytes.Split([]byte(*workers), []byte(",")) {
		switch string(w) {
		case "hot":
			start("hot", func() { hotLoop(stop) })
		case "recurse":
			start("recurse", func() { recurseA(*depth, stop) })
		case "syscall":
			start("syscall", func() { syscallLoop(stop) })
		case "":
		default:
			fmt.Fprintf(os.Stderr, "unknown worker %q\n", w)
			os.Exit(2)
		}
	}
	fmt.Printf("pid %d\n", os.Getpid())
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
	wg.Wait()
}
