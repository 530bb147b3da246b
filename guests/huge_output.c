/* hostile: returns a huge output. Input: u32 n (default 64 MiB): allocate and return n bytes.
 * n = 0xFFFFFFFF: claim a 4 GiB output without having it. The sandbox refuses both (OutputTooLarge). */
#include "pangea_guest.h"

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    uint32_t n = len >= 4 ? pg_load_u32(in) : (64u << 20);
    if (n == 0xFFFFFFFFu) return pg_output(0, 0xFFFFFFFEu);
    uint8_t *out = pg_alloc(n);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    for (uint32_t i = 0; i < n; i += 4096) out[i] = 0xAB;
    PG_OUTPUT(out, n);
}
