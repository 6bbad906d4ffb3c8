// bench: the target program of `cargo xtask bench` (docs/benchmarks.md).
//
// A fixed unit of CPU work (SHA-256 over a 4 KiB buffer, chained so it cannot be skipped) done in
// a loop by worker goroutines, each counting its own units. Workloads:
//
//   - shallow: -workers goroutines hash at the top of a short stack (about 10 frames);
//   - deep:    each worker first recurses -depth frames (main.recurse), then hashes at the bottom,
//     so every sample of a worker sees a stack about -depth frames deep;
//   - deep-changing: each worker recurses -depth frames, hashes one unit at the bottom, returns
//     all the way up and descends again through its other call site (main.churn): a stack as
//     deep, whose outermost frame changes from one unit to the next;
//   - many:    -goroutines goroutines, each recursing to its own depth (16 to 1,000 frames through
//     two functions chosen by the goroutine's index bits, so stacks differ; every 100th one 5,000
//     deep), then taking turns: a few units of work, runtime.Gosched(), again.
//
// -parked N adds N goroutines parked in a channel receive (the dump benchmark's goroutines).
//
// It prints "ready" once every worker is at work, then answers each "count" line on standard input
// with "<units done> <nanoseconds since start>" (its own clock: the harness takes throughput from
// these), and each "selfdump" line with "<nanoseconds> <bytes>" of its own
// pprof.Lookup("goroutine").WriteTo(w, 2), which keeps the world stopped while it runs. It exits
// when standard input closes, or after -seconds at the latest.
package main

import (
	"bufio"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// counter is one worker's unit count on its own cache line.
type counter struct {
	n atomic.Uint64
	_ [56]byte
}

var (
	counters []counter
	sink     atomic.Uint64
	started  sync.WaitGroup
)

// unit is the fixed piece of work: one SHA-256 of a 4 KiB buffer whose head is the previous sum.
//
//go:noinline
func unit(buf *[4096]byte) {
	sum := sha256.Sum256(buf[:])
	copy(buf[:32], sum[:])
}

// work hashes forever, counting units; pause > 0 yields after every pause units.
//
//go:noinline
func work(c *counter, seed int, pause int) {
	var buf [4096]byte
	buf[0] = byte(seed)
	buf[1] = byte(seed >> 8)
	started.Done()
	n := uint64(0)
	for {
		unit(&buf)
		n++
		c.n.Store(n)
		if pause > 0 && n%uint64(pause) == 0 {
			runtime.Gosched()
		}
	}
}

// recurse descends n frames, then works at the bottom.
//
//go:noinline
func recurse(n int, c *counter, seed int, pause int) int {
	if n <= 0 {
		work(c, seed, pause)
		return 0
	}
	return recurse(n-1, c, seed, pause) + 1
}

// recurseOnce descends n frames, does one unit of work at the bottom and returns.
//
//go:noinline
func recurseOnce(n int, buf *[4096]byte) int {
	if n <= 0 {
		unit(buf)
		return 0
	}
	return recurseOnce(n-1, buf) + 1
}

// churn is a deep worker whose stack is rebuilt after every unit of work: it returns from the
// whole recursion and descends again through the other of its two call sites, so its outermost
// frame differs from one unit to the next while every frame above it is rebuilt at the same
// addresses.
//
//go:noinline
func churn(depth int, c *counter, seed int) {
	var buf [4096]byte
	buf[0] = byte(seed)
	buf[1] = byte(seed >> 8)
	started.Done()
	n := uint64(0)
	for {
		if n%2 == 0 {
			buf[2] += byte(recurseOnce(depth, &buf))
		} else {
			buf[2] += byte(recurseOnce(depth, &buf) + 1)
		}
		n++
		c.n.Store(n)
	}
}

// recurseA and recurseB descend together, each level picking the next function from a bit of
// path, so goroutines with different paths have different stacks.
//
//go:noinline
func recurseA(n int, path uint32, c *counter, seed int) int {
	if n <= 0 {
		work(c, seed, 20)
		return 0
	}
	if path>>(n%32)&1 == 0 {
		return recurseA(n-1, path, c, seed) + 1
	}
	return recurseB(n-1, path, c, seed) + 1
}

//go:noinline
func recurseB(n int, path uint32, c *counter, seed int) int {
	if n <= 0 {
		work(c, seed, 20)
		return 0
	}
	if path>>(n%32)&1 == 0 {
		return recurseA(n-1, path, c, seed) + 2
	}
	return recurseB(n-1, path, c, seed) + 2
}

func main() {
	workload := flag.String("workload", "shallow", "shallow, deep, deep-changing or many")
	workers := flag.Int("workers", runtime.GOMAXPROCS(0), "worker goroutines (shallow, deep, deep-changing)")
	depth := flag.Int("depth", 5000, "recursion depth of each worker (deep, deep-changing)")
	goroutines := flag.Int("goroutines", 10000, "goroutines (many)")
	seconds := flag.Int("seconds", 1800, "exit after this many seconds at the latest")
	parked := flag.Int("parked", 0, "goroutines parked in a channel receive")
	flag.Parse()
	never := make(chan int)
	for i := 0; i < *parked; i++ {
		go func() { <-never }()
	}
	start := time.Now()

	switch *workload {
	case "shallow", "deep", "deep-changing":
		counters = make([]counter, *workers)
		started.Add(*workers)
		for i := 0; i < *workers; i++ {
			i := i
			switch *workload {
			case "shallow":
				go work(&counters[i], i, 0)
			case "deep":
				go func() { sink.Add(uint64(recurse(*depth, &counters[i], i, 0))) }()
			default:
				go churn(*depth, &counters[i], i)
			}
		}
	case "many":
		counters = make([]counter, *goroutines)
		started.Add(*goroutines)
		for i := 0; i < *goroutines; i++ {
			i := i
			path := uint32(i) * 2654435761
			d := 16 + int(path%985)
			if i%100 == 99 {
				d = 5000
			}
			go func() { sink.Add(uint64(recurseA(d, path, &counters[i], i))) }()
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown workload %q\n", *workload)
		os.Exit(2)
	}
	started.Wait()
	fmt.Println("ready")

	go func() {
		time.Sleep(time.Duration(*seconds) * time.Second)
		os.Exit(0)
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "selfdump" {
			var w countingWriter
			t := time.Now()
			pprof.Lookup("goroutine").WriteTo(&w, 2)
			fmt.Printf("%d %d\n", time.Since(t).Nanoseconds(), w.n)
			continue
		}
		if in.Text() != "count" {
			continue
		}
		var total uint64
		for i := range counters {
			total += counters[i].n.Load()
		}
		fmt.Printf("%d %d\n", total, time.Since(start).Nanoseconds())
	}
}

// countingWriter discards what it is given and counts the bytes.
type countingWriter struct{ n int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}
