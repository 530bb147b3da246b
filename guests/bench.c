/* bench: the fixed benchmark behind capacity adverts (pangea_p2p.sandbox.measure_speed).
 * Input: empty (1,000,000 rounds) or u32 rounds. Each round mixes integer arithmetic, a table
 * load/store and float64 arithmetic, so fuel per second tracks a machine's general compute speed.
 * Output: u64 checksum, u64 rounds (both little-endian). */
#include "pangea_guest.h"

#define TABLE 4096u
static uint32_t table[TABLE];

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    uint32_t rounds = 1000000u;
    if (len == 4) rounds = pg_load_u32(in);
    else if (len != 0) PG_ERROR(PG_ERR_INVALID_INPUT);
    uint32_t x = 0x9E3779B9u;
    double acc = 0.0;
    for (uint32_t i = 0; i < rounds; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        uint32_t slot = x & (TABLE - 1u);
        table[slot] += x;
        acc = acc * 0.5 + (double)(table[slot] & 0xFFFFu);
    }
    uint64_t sum = 0;
    for (uint32_t i = 0; i < TABLE; i++) sum = sum * 31u + table[i];
    uint8_t *out = pg_alloc(16);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    pg_store_u64(out, sum ^ (uint64_t)acc);
    pg_store_u64(out + 8, rounds);
    PG_OUTPUT(out, 16);
}
