/* matmul_block: one output block of a float64 matrix product, C = A_panel x B_panel.
 *
 * Input (little-endian): u32 m, u32 k, u32 n, u32 reserved (must be 0),
 *   then A: m*k f64 row-major (a row panel of A), then B: k*n f64 row-major (a column panel of B).
 * Output: u32 m, u32 n, u32 0, u32 0, then C: m*n f64 row-major.
 * Summation order (bit-exact, no fused multiply-add):
 *   C[i][j] = (((+0.0 + A[i][0]*B[0][j]) + A[i][1]*B[1][j]) + ...) + A[i][k-1]*B[k-1][j]
 * each product and each sum rounded to f64. Loop order i, p, j (four rows of A at a time) keeps that
 * order per element.
 */
#include "pangea_guest.h"

#define HEADER_BYTES 16u

uint64_t pg_main(const uint8_t *in, uint32_t len) {
    if (len < HEADER_BYTES) PG_ERROR(PG_ERR_INVALID_INPUT);
    uint32_t m = pg_load_u32(in), k = pg_load_u32(in + 4), n = pg_load_u32(in + 8);
    if (pg_load_u32(in + 12) != 0) PG_ERROR(PG_ERR_INVALID_INPUT);
    uint64_t need = HEADER_BYTES + 8ull * ((uint64_t)m * k + (uint64_t)k * n);
    uint64_t out_bytes = HEADER_BYTES + 8ull * ((uint64_t)m * n);
    if (need != len || out_bytes > 0xFFFFFFF0ull) PG_ERROR(PG_ERR_INVALID_INPUT);
    uint8_t *out = pg_alloc((uint32_t)out_bytes);
    if (!out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    const double *a = (const double *)(in + HEADER_BYTES);  /* alloc() returns 16-byte aligned input */
    const double *b = a + (uint64_t)m * k;
    double *c = (double *)(out + HEADER_BYTES);
    pg_store_u32(out, m); pg_store_u32(out + 4, n); pg_store_u32(out + 8, 0); pg_store_u32(out + 12, 0);
    uint32_t i = 0;
    for (; i + 4 <= m; i += 4) {  /* four rows share each load of a B row; per-element order unchanged */
        double *c0 = c + (uint64_t)i * n, *c1 = c0 + n, *c2 = c1 + n, *c3 = c2 + n;
        const double *a0 = a + (uint64_t)i * k, *a1 = a0 + k, *a2 = a1 + k, *a3 = a2 + k;
        for (uint32_t j = 0; j < 4 * n; j++) c0[j] = 0.0;
        for (uint32_t p = 0; p < k; p++) {
            double x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
            const double *bp = b + (uint64_t)p * n;
            for (uint32_t j = 0; j < n; j++) {
                double bj = bp[j];
                c0[j] = c0[j] + x0 * bj;
                c1[j] = c1[j] + x1 * bj;
                c2[j] = c2[j] + x2 * bj;
                c3[j] = c3[j] + x3 * bj;
            }
        }
    }
    for (; i < m; i++) {
        double *ci = c + (uint64_t)i * n;
        for (uint32_t j = 0; j < n; j++) ci[j] = 0.0;
        for (uint32_t p = 0; p < k; p++) {
            double aip = a[(uint64_t)i * k + p];
            const double *bp = b + (uint64_t)p * n;
            for (uint32_t j = 0; j < n; j++) ci[j] = ci[j] + aip * bp[j];
        }
    }
    PG_OUTPUT(out, (uint32_t)out_bytes);
}
