//go:build !cgo

package main

import "io"

// startNative does nothing without cgo.
func startNative(w io.Writer) {}
