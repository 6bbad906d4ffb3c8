// pprofagree: a fixed CPU-bound workload that records its own CPU profile with runtime/pprof,
// so the end-to-end tests can compare Go's profile with stacksampler's of the same window.
//
// Five hot functions (main.alpha .. main.epsilon), each a distinct arithmetic loop marked
// //go:noinline (an inlined function would be charged to its caller in one profile and not the
// other), run by three goroutines in fixed proportions of work units:
//
//	goroutine 1: alpha x8, beta x4      goroutine 2: gamma x6, delta x3
//	goroutine 3: epsilon x2, alpha x2, delta x1
//
// so their CPU shares are roughly alpha 30%, gamma 20%, beta 13%, delta 13%, epsilon 7% (the
// exact numbers depend on the machine; the test compares the two profiles, not these numbers).
// No goroutine allocates: the garbage collector stays out of both profiles.
//
// It prints "pid <pid>" and "ready", waits for a line on standard input (the test sends it
// when stacksampler is sampling), starts the CPU profile (-hz, 100 by default as Go's own
// default), runs the workload until the process has used -cpu-seconds of CPU time (so a busy
// machine gives both profilers as many samples as an idle one, only later) or -seconds of wall
// time have passed, stops the profile, writes it to -profile, prints "done" and exits. It also
// exits when standard input closes before the start line.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// One work unit is about 50k loop iterations: short against the 10 ms sampling period, so
// each profile sees the goroutines' mixes and not their phases.
const unit = 50000

var sink uint64

//go:noinline
func alpha(n int) uint64 {
	x := uint64(1)
	for i := 0; i < n*unit; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

//go:noinline
func beta(n int) uint64 {
	x := uint64(7)
	for i := 0; i < n*unit; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

//go:noinline
func gamma(n int) uint64 {
	a, b := uint64(0), uint64(1)
	for i := 0; i < n*unit; i++ {
		a, b = b, a+b+uint64(i)
	}
	return a
}

//go:noinline
func delta(n int) uint64 {
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < n*unit; i++ {
		x = (x >> 3) | (x << 61)
		x += uint64(i) * 0xbf58476d1ce4e5b9
	}
	return x
}

//go:noinline
func epsilon(n int) uint64 {
	x := uint64(3)
	for i := 0; i < n*unit; i++ {
		x = x*x + uint64(i)
		x ^= x >> 31
	}
	return x
}

// worker repeats mix until stop is set.
func worker(stop *atomic.Bool, wg *sync.WaitGroup, mix func() uint64) {
	defer wg.Done()
	var acc uint64
	for !stop.Load() {
		acc += mix()
	}
	atomic.AddUint64(&sink, acc)
}

// cpuTime is the CPU time the process has used, user and system, all threads.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	profile := flag.String("profile", "cpu.pprof", "where to write the CPU profile")
	seconds := flag.Float64("seconds", 60, "longest wall time the workload runs")
	cpuSeconds := flag.Float64("cpu-seconds", 10, "CPU time (all threads) after which the workload stops")
	hz := flag.Int("hz", 100, "CPU profile rate")
	flag.Parse()

	fmt.Printf("pid %d\n", os.Getpid())
	fmt.Println("ready")
	if !bufio.NewScanner(os.Stdin).Scan() {
		return
	}

	f, err := os.Create(*profile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *hz != 100 {
		// Before StartCPUProfile, which then warns that the rate is already set.
		runtime.SetCPUProfileRate(*hz)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(3)
	go worker(&stop, &wg, func() uint64 { return alpha(8) + beta(4) })
	go worker(&stop, &wg, func() uint64 { return gamma(6) + delta(3) })
	go worker(&stop, &wg, func() uint64 { return epsilon(2) + alpha(2) + delta(1) })
	start := cpuTime()
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	for time.Now().Before(deadline) && (cpuTime()-start).Seconds() < *cpuSeconds {
		time.Sleep(50 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()

	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("done")
}
