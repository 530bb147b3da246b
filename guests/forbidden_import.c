/* hostile: tries to reach the host through WASI (files, sockets, environment, clock, randomness) and
 * an `env` function. The sandbox must refuse it before instantiation (ForbiddenImport). */
#include "pangea_guest.h"

#define WASI(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))
WASI("path_open") int32_t path_open(int32_t, int32_t, int32_t, int32_t, int32_t, int64_t, int64_t, int32_t, int32_t);
WASI("sock_send") int32_t sock_send(int32_t, int32_t, int32_t, int32_t, int32_t);
WASI("environ_get") int32_t environ_get(int32_t, int32_t);
WASI("clock_time_get") int32_t clock_time_get(int32_t, int64_t, int32_t);
WASI("random_get") int32_t random_get(int32_t, int32_t);
WASI("proc_exit") void proc_exit(int32_t);
__attribute__((import_module("env"), import_name("host_read_file"))) int32_t host_read_file(int32_t, int32_t);

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    int32_t *out = pg_alloc(28);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    out[0] = path_open(3, 0, (int32_t)(uintptr_t)in, (int32_t)len, 0, 0, 0, 0, 0);
    out[1] = sock_send(3, 0, 0, 0, 0);
    out[2] = environ_get(0, 0);
    out[3] = clock_time_get(0, 1, 0);
    out[4] = random_get(0, 16);
    out[5] = host_read_file((int32_t)(uintptr_t)in, (int32_t)len);
    out[6] = 0;
    if (len == 0) proc_exit(1);
    PG_OUTPUT(out, 28);
}
