// Command goroutines runs goroutines with known ids in known states, for stacksampler's
// goroutine tests: a spinner in user code (running), a goroutine looping on a read of /dev/zero
// (syscall), and a spinner under pprof.Do labels req=42 (running, labelled).
//
// It prints "goid <role> <id>" for each, then "ready", and exits after -seconds or when stdin
// closes.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"
)

// readBufferBytes makes each read spend its time in the kernel (clearing the buffer).
const readBufferBytes = 1 << 20

var sink uint64

// goid parses the current goroutine's id from its own traceback header ("goroutine 7 [").
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
func spinUser(n uint64) uint64 {
	for i := uint64(0); i < 1000000; i++ {
		n = n*6364136223846793005 + 1442695040888963407
	}
	return n
}

//go:noinline
func spinLabelled(n uint64) uint64 {
	for i := uint64(0); i < 1000000; i++ {
		n = n*2862933555777941757 + 3037000493
	}
	return n
}

//go:noinline
func readZero(fd int, buf []byte) {
	if _, err := syscall.Read(fd, buf); err != nil {
		fmt.Fprintln(os.Stderr, "read /dev/zero:", err)
		os.Exit(1)
	}
}

func main() {
	seconds := flag.Int("seconds", 60, "exit after this many seconds")
	labelValue := flag.String("label-value", "42", "value of the labelled spinner's req label")
	flag.Parse()

	ids := make(chan string, 3)
	go func() {
		ids <- fmt.Sprintf("goid spinner %d", goid())
		n := uint64(1)
		for {
			n = spinUser(n)
			sink = n
		}
	}()
	go func() {
		fd, err := syscall.Open("/dev/zero", syscall.O_RDONLY, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "open /dev/zero:", err)
			os.Exit(1)
		}
		buf := make([]byte, readBufferBytes)
		ids <- fmt.Sprintf("goid syscaller %d", goid())
		for {
			readZero(fd, buf)
		}
	}()
	go func() {
		pprof.Do(context.Background(), pprof.Labels("req", *labelValue), func(context.Context) {
			ids <- fmt.Sprintf("goid labelled %d", goid())
			n := uint64(1)
			for {
				n = spinLabelled(n)
				sink = n
			}
		})
	}()
	for i := 0; i < 3; i++ {
		fmt.Println(<-ids)
	}
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
