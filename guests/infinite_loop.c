/* hostile: never returns. Stopped by the fuel budget or the wall-time (epoch) deadline. */
#include "pangea_guest.h"

static volatile uint32_t sink;

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    (void)in; (void)len;
    for (;;) sink = sink + 1;
}
