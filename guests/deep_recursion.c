/* hostile: unbounded non-tail recursion (input: u32 depth, default 2^30). Uses only the wasm value
 * stack (no address-taken locals), so it overflows the engine's native stack: StackOverflow. */
#include "pangea_guest.h"

static volatile uint64_t sink;

__attribute__((noinline)) static uint64_t dive(uint32_t n) {
    if (n == 0) return sink;
    uint64_t r = dive(n - 1);
    sink = r;  /* a volatile store after the call: no tail-call elimination */
    return r + n;
}

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    uint32_t depth = len >= 4 ? pg_load_u32(in) : (1u << 30);
    uint64_t *out = pg_alloc(8);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    *out = dive(depth);
    PG_OUTPUT(out, 8);
}
