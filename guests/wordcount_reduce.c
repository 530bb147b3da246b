/* wordcount_reduce: merges word-count tables.
 * Input: any number of word-count tables (wordcount.h) concatenated. Output: one table whose counts
 * are the sums. Malformed input is refused with PG_ERR_INVALID_INPUT. */
#include "wordcount.h"

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    /* First pass: validate and count entries. */
    uint64_t total = 0;
    for (uint32_t pos = 0; pos < len;) {
        if (len - pos < 4) PG_ERROR(PG_ERR_INVALID_INPUT);
        uint32_t entries = pg_load_u32(in + pos); pos += 4;
        for (uint32_t i = 0; i < entries; i++) {
            if (len - pos < 4) PG_ERROR(PG_ERR_INVALID_INPUT);
            uint32_t wl = pg_load_u32(in + pos); pos += 4;
            if (wl > len - pos || len - pos - wl < 8) PG_ERROR(PG_ERR_INVALID_INPUT);
            pos += wl + 8;
            total++;
        }
    }
    if (total * sizeof(wc_entry) > 0x7FFFFFFFull) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    wc_entry *e = pg_alloc((uint32_t)(total * sizeof(wc_entry)) + 16);
    if (!e) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    uint32_t n = 0;
    for (uint32_t pos = 0; pos < len;) {
        uint32_t entries = pg_load_u32(in + pos); pos += 4;
        for (uint32_t i = 0; i < entries; i++) {
            uint32_t wl = pg_load_u32(in + pos); pos += 4;
            e[n].word = in + pos; e[n].len = wl; e[n].pad = 0;
            pos += wl;
            e[n].count = pg_load_u64(in + pos); pos += 8;
            n++;
        }
    }
    return wc_emit(e, n);
}
