// C side of cgomix, compiled by cgo at its default -O2: no frame pointers.
#include <stdlib.h>

#include "_cgo_export.h"

volatile int c_stop;
static volatile int sink;

// Recurses n levels, then calls back into Go. The volatile local read after the call keeps the
// recursion a real one (no tail call, no loop).
__attribute__((noinline)) int c_rec(int n) {
	volatile int local = n;
	if (n <= 1) {
		goCallback();
		return local;
	}
	int r = c_rec(n - 1);
	return r + local;
}

__attribute__((noinline)) int c_entry(int depth) {
	int r = c_rec(depth);
	sink = r;
	return r + 1;
}

// Spins in libc (strtod) until c_stop is set.
__attribute__((noinline)) void c_libc_loop(void) {
	while (!c_stop) {
		sink += (int)strtod("3.14159265358979e10", NULL);
	}
	sink++;
}
