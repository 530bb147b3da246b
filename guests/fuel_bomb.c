/* hostile: a finite but astronomically long computation (naive Fibonacci of 90): ~10^19 calls.
 * Shallow recursion (depth 90), so only the fuel budget or the wall-time deadline stops it. */
#include "pangea_guest.h"

static volatile uint32_t depth_seed = 90;

__attribute__((noinline)) static uint64_t fib(uint32_t n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    (void)in; (void)len;
    uint64_t *out = pg_alloc(8);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    *out = fib(depth_seed);
    PG_OUTPUT(out, 8);
}
