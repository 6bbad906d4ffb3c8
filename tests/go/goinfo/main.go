// goinfo is the target of stacksampler's Go runtime layout tests (tests/tests/goruntime_layout.rs).
//
// It is built with every Go toolchain the tests know, normal, stripped and PIE; the tests read the
// binary (build info, DWARF) and never need to run it. When run, it prints its Go version and the
// id of a labelled goroutine, so it also serves as a small live target.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"
)

// goid parses the current goroutine's id from its own traceback header ("goroutine 7 [running]:").
func goid() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	fields := strings.Fields(string(buf))
	if len(fields) < 2 {
		return -1
	}
	id, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return -1
	}
	return id
}

func main() {
	fmt.Printf("version %s\n", runtime.Version())
	var wg sync.WaitGroup
	wg.Add(1)
	pprof.Do(context.Background(), pprof.Labels("req", "42"), func(ctx context.Context) {
		go func() {
			defer wg.Done()
			fmt.Printf("labelled goid %d\n", goid())
		}()
	})
	wg.Wait()
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		time.Sleep(time.Hour)
	}
}
