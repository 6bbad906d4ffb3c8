// symoracle is the ground truth for stacksampler's symbolizer: it records program counters with
// runtime.Callers at several places (some inside functions the compiler inlines), expands them
// with runtime.CallersFrames and prints both, then blocks reading stdin so a test can symbolize
// the same addresses in the live process. It exits when stdin closes.
//
// Output lines:
//
//	STACK <name>                      a capture point starts
//	PC <hex> <function>\t<file>\t<line>  one runtime.Callers PC, expanded alone by CallersFrames
//	FRAME <function>\t<file>\t<line>     the whole stack expanded at once, one line per frame
//	END
//	CADDR <name> <hex>                 address of a C function (cgo builds only)
//	READY
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
)

var out = bufio.NewWriter(os.Stdout)
var outMu sync.Mutex

// capture records the stack of its caller's caller chain under name.
//
//go:noinline
func capture(name string) {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(2, pcs)
	pcs = pcs[:n]
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(out, "STACK %s\n", name)
	for _, pc := range pcs {
		frames := runtime.CallersFrames([]uintptr{pc})
		f, _ := frames.Next()
		fmt.Fprintf(out, "PC %x %s\t%s\t%d\n", pc, f.Function, f.File, f.Line)
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		fmt.Fprintf(out, "FRAME %s\t%s\t%d\n", f.Function, f.File, f.Line)
		if !more {
			break
		}
	}
	fmt.Fprintln(out, "END")
}

// Small functions the compiler inlines: inlineLeaf into inlineMid into outerNoInline.
func inlineLeaf(x int) int {
	capture("inline-chain")
	return x + 1
}

func inlineMid(x int) int {
	return inlineLeaf(x) * 2
}

//go:noinline
func outerNoInline(x int) int {
	return inlineMid(x) + 3
}

// T has a pointer method that is not inlined and a value method that is.
type T struct{ n int }

//go:noinline
func (t *T) Method() int {
	f := func() int {
		capture("method-closure")
		return t.n
	}
	return f() + t.inlinedValue()
}

func (t T) inlinedValue() int { return t.n * 2 }

// Map is generic: its name prints as main.Map[...].
//
//go:noinline
func Map[E any](xs []E, f func(E) E) []E {
	out := make([]E, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	capture("generic")
	return out
}

//go:noinline
func recurse(depth int) int {
	if depth == 0 {
		capture("recursion")
		return 0
	}
	return recurse(depth-1) + 1
}

func worker(wg *sync.WaitGroup) {
	defer wg.Done()
	capture("goroutine")
}

func main() {
	outerNoInline(1)
	t := &T{n: 4}
	t.Method()
	Map([]int{1, 2}, func(x int) int { return x * 3 })
	recurse(5)
	var wg sync.WaitGroup
	wg.Add(1)
	go worker(&wg)
	wg.Wait()
	func() {
		capture("main-closure")
	}()
	startNative(out)
	fmt.Fprintln(out, "READY")
	out.Flush()
	// Block until the test closes stdin.
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
}
