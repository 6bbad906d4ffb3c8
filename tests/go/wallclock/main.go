// Command wallclock runs goroutines whose wall-clock profile is known, for stacksampler's
// `record --wall` tests. One mode per run (-mode):
//
//   - split: one goroutine loops forever: 900 ms asleep in sleepPart, then 100 ms computing in
//     computePart (90% / 10% of its wall-clock time). It prints "goid worker N".
//   - leak: every 20 ms a new goroutine blocks forever sending on an unbuffered channel in
//     leakSend (created in spawnLeaks), 50 per second.
//   - blocked: 8 goroutines block forever on a channel receive and a mutex, the main goroutine
//     on a select with a channel; nothing runs, nothing wakes (a timer far away keeps the
//     runtime from calling it a deadlock). Goroutines carry the label role=stuck.
//
// Each prints "ready" once its goroutines are started, and exits after -seconds or (except
// blocked, which reads nothing) when stdin closes.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

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
func sleepPart() {
	time.Sleep(900 * time.Millisecond)
}

//go:noinline
func computePart() {
	n := sink
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
		for i := 0; i < 10000; i++ {
			n = n*6364136223846793005 + 1442695040888963407
		}
	}
	sink = n
}

func split() {
	started := make(chan struct{})
	go func() {
		fmt.Printf("goid worker %d\n", goid())
		close(started)
		for {
			sleepPart()
			computePart()
		}
	}()
	<-started
}

var leaked = make(chan int)

//go:noinline
func leakSend(i int) {
	leaked <- i
}

func spawnLeaks() {
	for i := 0; ; i++ {
		go leakSend(i)
		time.Sleep(20 * time.Millisecond)
	}
}

//go:noinline
func stuckReceive(ch chan int) {
	<-ch
}

//go:noinline
func stuckLock(mu *sync.Mutex) {
	mu.Lock()
}

func blocked() {
	never := make(chan int)
	var mu sync.Mutex
	mu.Lock()
	pprof.Do(context.Background(), pprof.Labels("role", "stuck"), func(context.Context) {
		for i := 0; i < 4; i++ {
			go stuckReceive(never)
			go stuckLock(&mu)
		}
	})
}

func main() {
	mode := flag.String("mode", "split", "split, leak or blocked")
	seconds := flag.Int("seconds", 60, "exit after this many seconds")
	flag.Parse()
	switch *mode {
	case "split":
		split()
	case "leak":
		go spawnLeaks()
	case "blocked":
		blocked()
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", *mode)
		os.Exit(2)
	}
	fmt.Println("ready")
	stdinClosed := make(chan struct{})
	// A reader of stdin sits in a system call: the blocked mode has none (it ends by -seconds).
	go func() {
		if *mode == "blocked" {
			return
		}
		buf := make([]byte, 1)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				close(stdinClosed)
				return
			}
		}
	}()
	select {
	case <-stdinClosed:
	case <-time.After(time.Duration(*seconds) * time.Second):
	}
}
