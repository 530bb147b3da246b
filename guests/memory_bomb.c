/* hostile: grows linear memory one page at a time and touches every page until memory.grow fails.
 * Input byte 0 (or empty): then report PG_ERR_OUT_OF_MEMORY, as a well-behaved guest does.
 * Input byte 1: then trap (`unreachable`), as Rust's allocator does on failure. */
#include "pangea_guest.h"

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    uint8_t mode = len > 0 ? in[0] : 0;
    for (;;) {
        size_t before = __builtin_wasm_memory_grow(0, 1);
        if (before == (size_t)-1) break;
        volatile uint8_t *page = (volatile uint8_t *)(before * PG_PAGE_BYTES);
        for (uint32_t i = 0; i < PG_PAGE_BYTES; i += 4096) page[i] = 1;
    }
    if (mode == 1) __builtin_trap();
    PG_ERROR(PG_ERR_OUT_OF_MEMORY);
}
