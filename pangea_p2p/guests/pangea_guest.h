/* The Pangea guest ABI for C guests built freestanding to wasm32 (see protocols/guest-abi.md).
 *
 * A guest exports `memory`, `alloc(len) -> ptr` and `run(ptr, len) -> packed`, and imports nothing.
 * This header gives every guest the same bump allocator and the packing helpers; a guest defines
 * `pg_main(const uint8_t *in, uint32_t len)` and returns with PG_OUTPUT / PG_ERROR.
 */
#ifndef PANGEA_GUEST_H
#define PANGEA_GUEST_H

#include <stddef.h>
#include <stdint.h>

#define PG_EXPORT(name) __attribute__((export_name(name)))
#define PG_PAGE_BYTES 65536u

/* Error codes a guest can return instead of output (run returns len field 0xFFFFFFFF). */
#define PG_ERR_OUT_OF_MEMORY 1u
#define PG_ERR_INVALID_INPUT 2u

extern unsigned char __heap_base;
static uintptr_t pg_heap_top;

/* Bump allocator: 16-byte aligned, grows linear memory as needed, 0 when memory.grow fails. */
static void *pg_alloc(uint32_t len) {
    if (pg_heap_top == 0) pg_heap_top = (uintptr_t)&__heap_base;
    uintptr_t p = (pg_heap_top + 15u) & ~(uintptr_t)15u;
    uint64_t end = (uint64_t)p + len;
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * PG_PAGE_BYTES;
    if (end > 0xFFFFFFFFull) return 0;
    if (end > have) {
        uint64_t pages = (end - have + PG_PAGE_BYTES - 1) / PG_PAGE_BYTES;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return 0;
    }
    pg_heap_top = (uintptr_t)end;
    return (void *)p;
}

PG_EXPORT("alloc") uint32_t alloc(uint32_t len) { return (uint32_t)(uintptr_t)pg_alloc(len); }

static inline uint64_t pg_output(const void *ptr, uint32_t len) {
    return ((uint64_t)len << 32) | (uint32_t)(uintptr_t)ptr;
}
static inline uint64_t pg_error(uint32_t code) { return (0xFFFFFFFFull << 32) | code; }

#define PG_OUTPUT(ptr, len) return pg_output((ptr), (len))
#define PG_ERROR(code) return pg_error(code)

static inline uint32_t pg_load_u32(const uint8_t *p) {
    uint32_t v; __builtin_memcpy(&v, p, 4); return v;  /* wasm is little-endian */
}
static inline void pg_store_u32(uint8_t *p, uint32_t v) { __builtin_memcpy(p, &v, 4); }
static inline void pg_store_u64(uint8_t *p, uint64_t v) { __builtin_memcpy(p, &v, 8); }
static inline uint64_t pg_load_u64(const uint8_t *p) {
    uint64_t v; __builtin_memcpy(&v, p, 8); return v;
}

uint64_t pg_main(const uint8_t *in, uint32_t len);

PG_EXPORT("run") uint64_t run(uint32_t ptr, uint32_t len) {
    return pg_main((const uint8_t *)(uintptr_t)ptr, len);
}

#endif
