/* echo: the trivial guest. Output = input. Used for per-task overhead benchmarks.
 * Exports two extra functions (ignored by the sandbox) to show a module may export more than the ABI. */
#include "pangea_guest.h"

uint64_t pg_main(const uint8_t *in, uint32_t len) { PG_OUTPUT(in, len); }

PG_EXPORT("add") int32_t add(int32_t a, int32_t b) { return a + b; }
PG_EXPORT("answer") int32_t answer(void) { return 42; }
