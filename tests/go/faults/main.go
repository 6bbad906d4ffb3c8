// Command faults is the target of stacksampler's fault-injection tests.
//
//	-mode checksum: computes a deterministic checksum round after round, printing one line per
//	                round, and exits 0 after -rounds rounds (0: at the end of the round in which
//	                stdin closes). Its output must be byte-identical to an unsampled run of the
//	                same number of rounds, however often it is attached to and detached from.
//	-mode threads:  parks -threads goroutines each locked to its own OS thread, spins in
//	                main.spin, prints "threads N" (the process's thread count) and "ready", and
//	                exits after -seconds or when stdin closes.
//	-mode quick:    exits at once (a target that is gone within milliseconds).
//	-mode churn:    the soak's target (`cargo xtask soak`): -workers goroutines recurse -depth
//	                frames and mix at the bottom, counting work units, while goroutines of
//	                random depth are created and exit all the time. Like tests/go/bench it
//	                prints "ready" and answers each "count" line on stdin with "<units done>
//	                <nanoseconds since start>"; it exits when stdin closes.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

var sink uint64

//go:noinline
func mix(x uint64) uint64 {
	for i := 0; i < 1000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

//go:noinline
func spin(stop <-chan struct{}) {
	x := uint64(88172645463325252)
	for {
		select {
		case <-stop:
			return
		default:
		}
		x = mix(x)
		sink = x
	}
}

func checksum(rounds int, perRound int) {
	done := make(chan struct{})
	if rounds == 0 {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			close(done)
		}()
	}
	x := uint64(2463534242)
	for r := 0; rounds == 0 || r < rounds; r++ {
		for i := 0; i < perRound; i++ {
			x = mix(x)
		}
		fmt.Printf("round %d checksum %016x\n", r, x)
		select {
		case <-done:
			return
		default:
		}
	}
}

// threadCount reads the Threads: line of /proc/self/status.
func threadCount() string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "Threads:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "Threads:"))
		}
	}
	return "?"
}

var units atomic.Uint64

// recurseThenWork descends depth frames, then mixes forever counting units (never returns).
//
//go:noinline
func recurseThenWork(depth int) uint64 {
	if depth > 0 {
		return recurseThenWork(depth-1) + 1
	}
	x := uint64(88172645463325252)
	for {
		x = mix(x)
		sink = x
		units.Add(1)
	}
}

// descendAndLeave is a short-lived goroutine's body: down depth frames, a nap, gone.
//
//go:noinline
func descendAndLeave(depth int) int {
	if depth > 0 {
		return descendAndLeave(depth-1) + 1
	}
	time.Sleep(5 * time.Millisecond)
	return 0
}

func churn(workers, depth int) {
	start := time.Now()
	for i := 0; i < workers; i++ {
		go recurseThenWork(depth)
	}
	go func() {
		r := rand.New(rand.NewSource(1))
		for {
			go descendAndLeave(1 + r.Intn(2000))
			time.Sleep(time.Millisecond)
		}
	}()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "count" {
			fmt.Printf("%d %d\n", units.Load(), time.Since(start).Nanoseconds())
		}
	}
}

func main() {
	mode := flag.String("mode", "checksum", "checksum, threads, quick or churn")
	rounds := flag.Int("rounds", 0, "checksum rounds (0: until stdin closes)")
	perRound := flag.Int("per-round", 100000, "mix calls per checksum round (about 0.2 s; few lines, so a full pipe never blocks it)")
	threads := flag.Int("threads", 1000, "goroutines locked to their own thread")
	seconds := flag.Int("seconds", 60, "exit after this many seconds (threads mode)")
	workers := flag.Int("workers", runtime.GOMAXPROCS(0), "deep workers (churn mode)")
	depth := flag.Int("depth", 5000, "recursion depth of each worker (churn mode)")
	flag.Parse()

	switch *mode {
	case "quick":
		return
	case "churn":
		churn(*workers, *depth)
		return
	case "checksum":
		checksum(*rounds, *perRound)
		return
	case "threads":
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", *mode)
		os.Exit(2)
	}

	stop := make(chan struct{})
	locked := make(chan struct{})
	for i := 0; i < *threads; i++ {
		go func() {
			runtime.LockOSThread()
			locked <- struct{}{}
			<-stop
		}()
	}
	for i := 0; i < *threads; i++ {
		<-locked
	}
	go spin(stop)
	fmt.Printf("threads %s\n", threadCount())
	fmt.Println("ready")
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Duration(*seconds) * time.Second):
	}
	close(stop)
}
