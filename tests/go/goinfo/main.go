// goinfo is the target of stacksampler's Go runtime layout tests (tests/tests/goruntime_layout.rs).
//
// It is built with every Go toolchain the tests know, normal, stripped and PIE. Without
// arguments it prints its Go version and the id of a labelled goroutine, then exits. With
// "block" it keeps two goroutines parked for the tests to read from its memory:
//
//	labelled goid N   blocked in a channel receive, under pprof.Do labels req=42
//	sleeper goid M    blocked in time.Sleep, without labels
//	ready
//
// and waits until it is killed.
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
	block := len(os.Args) > 1 && os.Args[1] == "block"
	fmt.Printf("version %s\n", runtime.Version())
	never := make(chan int)
	var printed sync.WaitGroup
	printed.Add(1)
	pprof.Do(context.Background(), pprof.Labels("req", "42"), func(ctx context.Context) {
		go func() {
			fmt.Printf("labelled goid %d\n", goid())
			printed.Done()
			if block {
				<-never
			}
		}()
	})
	printed.Wait()
	if !block {
		return
	}
	printed.Add(1)
	go func() {
		fmt.Printf("sleeper goid %d\n", goid())
		printed.Done()
		time.Sleep(time.Hour)
	}()
	printed.Wait()
	fmt.Println("ready")
	<-never
}
