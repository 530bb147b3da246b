/* wordcount_map: counts the words of a text.
 * Input: bytes. A word is a maximal run of ASCII letters, ASCII digits or bytes >= 0x80 (so UTF-8
 * letters stay inside words); ASCII letters are lower-cased. Output: a word-count table (wordcount.h). */
#include "wordcount.h"

static int is_word_byte(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    uint8_t *lower = pg_alloc(len + 1);
    wc_entry *e = pg_alloc((len / 2 + 1) * (uint32_t)sizeof(wc_entry));
    if (!lower || !e) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    uint32_t n = 0;
    for (uint32_t i = 0; i < len;) {
        if (!is_word_byte(in[i])) { i++; continue; }
        uint32_t start = i;
        while (i < len && is_word_byte(in[i])) {
            uint8_t c = in[i];
            lower[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
            i++;
        }
        e[n].word = lower + start; e[n].len = i - start; e[n].pad = 0; e[n].count = 1;
        n++;
    }
    return wc_emit(e, n);
}
