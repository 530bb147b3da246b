/* Shared by wordcount_map.c and wordcount_reduce.c: the word-count table format and a stable merge sort.
 *
 * Table format (little-endian): u32 entries, then per entry, sorted by word bytes ascending
 * (bytewise, a prefix sorts first) with no duplicates: u32 word_len, word bytes, u64 count.
 */
#include "pangea_guest.h"

typedef struct {
    const uint8_t *word;
    uint32_t len;
    uint32_t pad;
    uint64_t count;
} wc_entry;

static int wc_cmp(const wc_entry *x, const wc_entry *y) {
    uint32_t n = x->len < y->len ? x->len : y->len;
    for (uint32_t i = 0; i < n; i++) {
        if (x->word[i] != y->word[i]) return x->word[i] < y->word[i] ? -1 : 1;
    }
    return x->len < y->len ? -1 : (x->len > y->len ? 1 : 0);
}

/* Bottom-up merge sort of e[0..n) using tmp[0..n); returns the array holding the sorted result. */
static wc_entry *wc_sort(wc_entry *e, wc_entry *tmp, uint32_t n) {
    for (uint32_t width = 1; width < n; width *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * width) {
            uint32_t mid = lo + width < n ? lo + width : n;
            uint32_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            uint32_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) tmp[o++] = wc_cmp(&e[j], &e[i]) < 0 ? e[j++] : e[i++];
            while (i < mid) tmp[o++] = e[i++];
            while (j < hi) tmp[o++] = e[j++];
        }
        wc_entry *s = e; e = tmp; tmp = s;
    }
    return e;
}

/* Sorts, merges equal words (adding counts) and writes the table; returns the packed output. */
static uint64_t wc_emit(wc_entry *e, uint32_t n) {
    wc_entry *tmp = pg_alloc(n * (uint32_t)sizeof(wc_entry) + 16);
    if (!tmp) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    e = wc_sort(e, tmp, n);
    uint32_t uniq = 0;
    uint64_t bytes = 4;
    for (uint32_t i = 0; i < n; i++) {
        if (uniq > 0 && wc_cmp(&e[uniq - 1], &e[i]) == 0) {
            e[uniq - 1].count += e[i].count;
        } else {
            e[uniq++] = e[i];
            bytes += 12ull + e[i].len;
        }
    }
    if (bytes > 0xFFFFFFF0ull) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    uint8_t *out = pg_alloc((uint32_t)bytes);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    uint8_t *o = out;
    pg_store_u32(o, uniq); o += 4;
    for (uint32_t i = 0; i < uniq; i++) {
        pg_store_u32(o, e[i].len); o += 4;
        __builtin_memcpy(o, e[i].word, e[i].len); o += e[i].len;
        pg_store_u64(o, e[i].count); o += 8;
    }
    PG_OUTPUT(out, (uint32_t)bytes);
}
