//go:build cgo

package main

/*
#include <stdint.h>
#include <unistd.h>

// A C function of the main binary: it never returns, sleeping in libc's usleep.
static void symoracle_c_sleeper(void) {
	for (;;) usleep(100000);
}
static uintptr_t symoracle_usleep_addr(void) { return (uintptr_t)&usleep; }
static uintptr_t symoracle_sleeper_addr(void) { return (uintptr_t)&symoracle_c_sleeper; }
*/
import "C"

import (
	"fmt"
	"io"
)

// startNative starts a goroutine blocked in a C call and prints the addresses of C functions.
func startNative(w io.Writer) {
	go C.symoracle_c_sleeper()
	fmt.Fprintf(w, "CADDR usleep %x\n", uint64(C.symoracle_usleep_addr()))
	fmt.Fprintf(w, "CADDR symoracle_c_sleeper %x\n", uint64(C.symoracle_sleeper_addr()))
}
