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
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
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

func main() {
	mode := flag.String("mode", "checksum", "checksum, threads or quick")
	rounds := flag.Int("rounds", 0, "checksum rounds (0: until stdin closes)")
	perRound := flag.Int("per-round", 100000, "mix calls per checksum round (about 0.2 s; few lines, so a full pipe never blocks it)")
	threads := flag.Int("threads", 1000, "goroutines locked to their own thread")
	seconds := flag.Int("seconds", 60, "exit after this many seconds (threads mode)")
	flag.Parse()

	switch *mode {
	case "quick":
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
