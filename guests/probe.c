/* probe: a many-purpose guest for the sandbox tests. The first input byte picks a command:
 *   'E' rest          echo the rest
 *   'S' secret        keep the secret in a static buffer, return nothing
 *   'P'               return the whole linear memory (to look for another task's data)
 *   'F' u32 n         spin n rounds, return u64 (fuel grows linearly with n)
 *   'H' u32 n         allocate n bytes from the heap and touch them; PG_ERR_OUT_OF_MEMORY if it fails
 *   'G' u32 n         memory.grow(n) pages; return u32 old size, u32 new size (in pages)
 *   'T' c             trap: 'u' unreachable, 'd' divide by zero, 'o' out-of-bounds load,
 *                     'n' call through a null function pointer, 'v' INT_MIN / -1, 'c' NaN to integer
 *   'X'               refuse the input (PG_ERR_INVALID_INPUT)
 *   'B' u32 p, u32 n  return (p, n) unchecked: an output outside linear memory is an ABI violation
 */
#include "pangea_guest.h"

static uint8_t secret[256];
static volatile int32_t vzero = 0, vminus1 = -1, vmin = (int32_t)0x80000000;
static volatile uint32_t vfar = 0xFFFFFFF0u;
static volatile double vnan = __builtin_nan("");
typedef int32_t (*fn_t)(void);
static volatile fn_t vnull = 0;

static uint64_t trap(uint8_t kind) {
    uint32_t *out = pg_alloc(4);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    switch (kind) {
    case 'u': __builtin_trap();
    case 'd': *out = (uint32_t)(7 / vzero); break;
    case 'o': *out = *(volatile uint32_t *)(uintptr_t)vfar; break;
    case 'n': *out = (uint32_t)vnull(); break;
    case 'v': *out = (uint32_t)(vmin / vminus1); break;
    case 'c': *out = (uint32_t)__builtin_wasm_trunc_s_i32_f64(vnan); break;
    default: PG_ERROR(PG_ERR_INVALID_INPUT);
    }
    PG_OUTPUT(out, 4);
}

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    if (len == 0) PG_ERROR(PG_ERR_INVALID_INPUT);
    uint8_t cmd = in[0];
    const uint8_t *arg = in + 1;
    uint32_t alen = len - 1;
    uint32_t n = alen >= 4 ? pg_load_u32(arg) : 0;
    switch (cmd) {
    case 'E': PG_OUTPUT(arg, alen);
    case 'S':
        __builtin_memcpy(secret, arg, alen < sizeof secret ? alen : sizeof secret);
        PG_OUTPUT(0, 0);
    case 'P': PG_OUTPUT(0, (uint32_t)(__builtin_wasm_memory_size(0) * PG_PAGE_BYTES));
    case 'F': {
        uint64_t acc = 1;
        for (uint32_t i = 0; i < n; i++) acc = acc * 6364136223846793005ull + i;
        uint64_t *out = pg_alloc(8);
        if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
        *out = acc;
        PG_OUTPUT(out, 8);
    }
    case 'H': {
        volatile uint8_t *p = pg_alloc(n);
        if (!p) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
        for (uint32_t i = 0; i < n; i += 4096) p[i] = (uint8_t)i;
        PG_OUTPUT(0, 0);
    }
    case 'G': {
        uint32_t *out = pg_alloc(8);
        if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
        out[0] = (uint32_t)__builtin_wasm_memory_grow(0, n);
        out[1] = (uint32_t)__builtin_wasm_memory_size(0);
        PG_OUTPUT(out, 8);
    }
    case 'T': return trap(alen > 0 ? arg[0] : 0);
    case 'X': PG_ERROR(PG_ERR_INVALID_INPUT);
    case 'B': return pg_output((const void *)(uintptr_t)n, alen >= 8 ? pg_load_u32(arg + 4) : 0);
    default: PG_ERROR(PG_ERR_INVALID_INPUT);
    }
}
