/* Fused element-wise and memory kernels of the reading path, bf16 activations, fp32 math, AVX-512 BF16 CPUs.
 *
 * Each replaces a chain of torch ops that would each make a pass over memory (and a Python dispatch):
 *   infini_rmsnorm     y = w · bf16(x / sqrt(mean(x²) + eps))                  (Llama's RMSNorm, 4 ops → 1)
 *   infini_silu_mul    g ← silu(g) · u                                         (the MLP's gate, 2 ops → 1)
 *   infini_mem_read    eq. 3 and eq. 6 of Infini-attention for every query head and token:
 *                      σq = σ(a_h q), A_mem = σq M / (σq·z + eps), out = A_dot + g_h (A_mem − A_dot)
 *                      (σ = ELU + 1, a_h the memory sharpness, g_h = sigmoid(β_h)); optionally g_h A_mem too
 *   infini_mem_write   eq. 5 (delta rule) or eq. 4 (linear) for every KV head:
 *                      σk = σ(a k), U = V − σk M / (σk·z + eps) (delta) or V, M' = M + σkᵀ U, z' = z + Σ σk
 * M and z stay fp32 (the memory is never rounded); the products with M run in fp32 on register tiles.
 * Shapes are those of one segment (batch 1): T tokens, H query heads, Hkv KV heads, head dim 64.
 * Every function returns 0, or -1 on arguments it does not handle (the caller then uses torch).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define D 64   /* head dim */
#define TB 64  /* tokens per work item */
#define RT 4   /* tokens per register tile */

/* ---- RMSNorm ------------------------------------------------------------------------------------------ */
typedef struct {
    const bf16 *x, *w;
    bf16 *y;
    int C, rows_per_item;
    long N;
    float eps;
} norm_job;

static void norm_item(void *ctx, int item) {
    const norm_job *j = ctx;
    long r0 = (long)item * j->rows_per_item, r1 = r0 + j->rows_per_item < j->N ? r0 + j->rows_per_item : j->N;
    for (long r = r0; r < r1; r++) {
        const bf16 *x = j->x + r * j->C;
        bf16 *y = j->y + r * j->C;
        __m512 ss = _mm512_setzero_ps();
        for (int c = 0; c < j->C; c += 16) {
            __m512 v = load_bf16(x + c);
            ss = _mm512_fmadd_ps(v, v, ss);
        }
        __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)j->C + j->eps));
        for (int c = 0; c < j->C; c += 16) {
            __m512 n = _mm512_mul_ps(load_bf16(x + c), inv);
            n = round_bf16(n);
            store_bf16(y + c, _mm512_mul_ps(n, load_bf16(j->w + c)));
        }
    }
}

int infini_rmsnorm(const bf16 *x, const bf16 *w, bf16 *y, long N, int C, float eps, int n_threads) {
    if (C % 16 || N < 1) return -1;
    norm_job j = {x, w, y, C, 16, N, eps};
    parallel_for(norm_item, &j, (int)((N + j.rows_per_item - 1) / j.rows_per_item), n_threads);
    return 0;
}

/* ---- SiLU(g) · u ---------------------------------------------------------------------------------------- */
typedef struct {
    bf16 *g;
    const bf16 *u;
    long n, per_item;
} silu_job;

static void silu_item(void *ctx, int item) {
    const silu_job *j = ctx;
    long i0 = (long)item * j->per_item, i1 = i0 + j->per_item < j->n ? i0 + j->per_item : j->n;
    const __m512 one = _mm512_set1_ps(1.0f), nl2e = _mm512_set1_ps(-LOG2E);
    for (long i = i0; i < i1; i += 16) {
        __mmask16 m = i1 - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (i1 - i)) - 1);
        __m512 g = maskz_load_bf16(m, j->g + i), u = maskz_load_bf16(m, j->u + i);
        __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, exp2_ps(_mm512_mul_ps(g, nl2e))));
        mask_store_bf16(j->g + i, m, _mm512_mul_ps(s, u));
    }
}

int infini_silu_mul(bf16 *g, const bf16 *u, long n, int n_threads) {
    if (n < 1) return -1;
    silu_job j = {g, u, n, 16384};
    parallel_for(silu_item, &j, (int)((n + j.per_item - 1) / j.per_item), n_threads);
    return 0;
}

/* ---- memory products on register tiles ---------------------------------------------------------------- */
/* out[r] = s[r] M / (s[r]·z + eps) for RT rows s (fp32, 64 each), M [64][64] row-major, z [64] */
static inline void read_tile(const float s[RT][D], const float *M, const float *z, float eps, __m512 out[RT][4]) {
    __m512 acc[RT][4];
    for (int r = 0; r < RT; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    for (int k = 0; k < D; k++) {
        __m512 m0 = _mm512_loadu_ps(M + k * D), m1 = _mm512_loadu_ps(M + k * D + 16);
        __m512 m2 = _mm512_loadu_ps(M + k * D + 32), m3 = _mm512_loadu_ps(M + k * D + 48);
        for (int r = 0; r < RT; r++) {
            __m512 b = _mm512_set1_ps(s[r][k]);
            acc[r][0] = _mm512_fmadd_ps(b, m0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(b, m1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(b, m2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(b, m3, acc[r][3]);
        }
    }
    for (int r = 0; r < RT; r++) {
        __m512 dz = _mm512_setzero_ps();
        for (int c = 0; c < 4; c++) dz = _mm512_fmadd_ps(_mm512_loadu_ps(s[r] + c * 16), _mm512_loadu_ps(z + c * 16), dz);
        __m512 den = _mm512_set1_ps(_mm512_reduce_add_ps(dz) + eps);
        for (int c = 0; c < 4; c++) out[r][c] = _mm512_div_ps(acc[r][c], den);
    }
}

/* s[r] = σ(a · x[r]) for the RT rows x (bf16, 64 each) */
static inline void sigma_rows(const bf16 *const x[RT], float a, float s[RT][D]) {
    const __m512 av = _mm512_set1_ps(a);
    for (int r = 0; r < RT; r++)
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(s[r] + c * 16, sigma_ps(_mm512_mul_ps(av, load_bf16(x[r] + c * 16))));
}

/* ---- memory read (eq. 3) and gate mix (eq. 6) -------------------------------------------------------- */
typedef struct {
    const bf16 *q;
    long qs_t, qs_h;
    const float *scale, *M, *z, *gate; /* gate: the logit β at gate[h·gs_h + t·gs_t] */
    long gs_h, gs_t;
    const float *gv, *gu; /* NULL, or [H][64]: the logit gains (v·A_mem + u·A_dot)/8 per row */
    bf16 *a;
    long as_t, as_h;
    bf16 *mo; /* NULL or [T, H·64] */
    int T, H, Hkv, nblk;
    float eps;
} read_job;

static void read_item(void *ctx, int item) {
    const read_job *j = ctx;
    const int h = item / j->nblk, t0 = (item % j->nblk) * TB, g = h / (j->H / j->Hkv);
    const int t1 = t0 + TB < j->T ? t0 + TB : j->T;
    const float *M = j->M + (long)g * D * D, *z = j->z + (long)g * D;
    const float a = j->scale ? j->scale[h] : 1.0f;
    float s[RT][D] __attribute__((aligned(64)));
    for (int t = t0; t < t1; t += RT) {
        const bf16 *rows[RT];
        for (int r = 0; r < RT; r++) rows[r] = j->q + (long)(t + r < t1 ? t + r : t1 - 1) * j->qs_t + h * j->qs_h;
        sigma_rows(rows, a, s);
        __m512 am[RT][4];
        read_tile(s, M, z, j->eps, am);
        for (int r = 0; r < RT && t + r < t1; r++) {
            bf16 *dst = j->a + (long)(t + r) * j->as_t + h * j->as_h;
            float logit = j->gate[h * j->gs_h + (long)(t + r) * j->gs_t];
            if (j->gv) {
                __m512 acc = _mm512_setzero_ps();
                for (int c = 0; c < 4; c++) {
                    acc = _mm512_fmadd_ps(am[r][c], _mm512_loadu_ps(j->gv + h * D + c * 16), acc);
                    acc = _mm512_fmadd_ps(load_bf16(dst + c * 16), _mm512_loadu_ps(j->gu + h * D + c * 16), acc);
                }
                logit += _mm512_reduce_add_ps(acc) * 0.125f; /* 1/√64 */
            }
            const __m512 gv = _mm512_set1_ps(1.0f / (1.0f + expf(-logit)));
            for (int c = 0; c < 4; c++) {
                __m512 ad = load_bf16(dst + c * 16);
                store_bf16(dst + c * 16, _mm512_fmadd_ps(gv, _mm512_sub_ps(am[r][c], ad), ad));
                if (j->mo) store_bf16(j->mo + (long)(t + r) * j->H * D + h * D + c * 16, _mm512_mul_ps(gv, am[r][c]));
            }
        }
    }
}

int infini_mem_read(const bf16 *q, long qs_t, long qs_h, const float *scale, const float *M, const float *z,
                    const float *gate, long gs_h, long gs_t, const float *gv, const float *gu, bf16 *a, long as_t,
                    long as_h, bf16 *mo, int T, int H, int Hkv, float eps, int n_threads) {
    if (T < 1 || Hkv < 1 || H % Hkv || !gv != !gu) return -1;
    read_job j = {q,  qs_t, qs_h, scale, M,  z, gate, gs_h, gs_t, gv, gu, a, as_t, as_h, mo, T, H, Hkv,
                  (T + TB - 1) / TB, eps};
    parallel_for(read_item, &j, H * j.nblk, n_threads);
    return 0;
}

/* ---- memory write (eq. 4 / 5) ---------------------------------------------------------------------------- */
typedef struct {
    const bf16 *k, *v;
    long ks_t, vs_t;
    const float *scale, *M, *z;
    float *Mo, *zo, *SK, *U; /* SK, U: [Hkv][T][64] scratch */
    int T, Hkv, nblk, delta;
    float eps;
} write_job;

/* σk and U = V − σk M / (σk·z + eps) (or V) for 64 tokens of one KV head */
static void write_prep_item(void *ctx, int item) {
    const write_job *j = ctx;
    const int g = item / j->nblk, t0 = (item % j->nblk) * TB, t1 = t0 + TB < j->T ? t0 + TB : j->T;
    const float *M = j->M + (long)g * D * D, *z = j->z + (long)g * D;
    const float a = j->scale ? j->scale[g] : 1.0f;
    float s[RT][D] __attribute__((aligned(64)));
    for (int t = t0; t < t1; t += RT) {
        const bf16 *rows[RT];
        for (int r = 0; r < RT; r++) rows[r] = j->k + (long)(t + r < t1 ? t + r : t1 - 1) * j->ks_t + g * D;
        sigma_rows(rows, a, s);
        __m512 old[RT][4];
        if (j->delta) read_tile(s, M, z, j->eps, old);
        for (int r = 0; r < RT && t + r < t1; r++) {
            float *sk = j->SK + ((long)g * j->T + t + r) * D, *u = j->U + ((long)g * j->T + t + r) * D;
            const bf16 *v = j->v + (long)(t + r) * j->vs_t + g * D;
            memcpy(sk, s[r], sizeof s[r]);
            for (int c = 0; c < 4; c++) {
                __m512 vv = load_bf16(v + c * 16);
                _mm512_storeu_ps(u + c * 16, j->delta ? _mm512_sub_ps(vv, old[r][c]) : vv);
            }
        }
    }
}

/* rows r0..r0+3 of M' = M + σkᵀ U and of z' = z + Σ_t σk for one KV head */
static void write_sum_item(void *ctx, int item) {
    const write_job *j = ctx;
    const int g = item / (D / 4), r0 = (item % (D / 4)) * 4;
    const float *SK = j->SK + (long)g * j->T * D, *U = j->U + (long)g * j->T * D;
    __m512 acc[4][4];
    float zs[4] = {0, 0, 0, 0};
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_loadu_ps(j->M + ((long)g * D + r0 + r) * D + c * 16);
    for (int t = 0; t < j->T; t++) {
        const float *u = U + (long)t * D, *sk = SK + (long)t * D + r0;
        __m512 u0 = _mm512_loadu_ps(u), u1 = _mm512_loadu_ps(u + 16), u2 = _mm512_loadu_ps(u + 32), u3 = _mm512_loadu_ps(u + 48);
        for (int r = 0; r < 4; r++) {
            __m512 b = _mm512_set1_ps(sk[r]);
            zs[r] += sk[r];
            acc[r][0] = _mm512_fmadd_ps(b, u0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(b, u1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(b, u2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(b, u3, acc[r][3]);
        }
    }
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(j->Mo + ((long)g * D + r0 + r) * D + c * 16, acc[r][c]);
        j->zo[g * D + r0 + r] = j->z[g * D + r0 + r] + zs[r];
    }
}

int infini_mem_write(const bf16 *k, long ks_t, const bf16 *v, long vs_t, const float *scale, const float *M,
                     const float *z, float *Mo, float *zo, int T, int Hkv, int delta, float eps, int n_threads) {
    if (T < 1 || Hkv < 1) return -1;
    size_t bytes = (size_t)Hkv * T * D * sizeof(float);
    float *SK = aligned_alloc(64, bytes), *U = aligned_alloc(64, bytes);
    if (!SK || !U) {
        free(SK);
        free(U);
        return -1;
    }
    write_job j = {k, v, ks_t, vs_t, scale, M, z, Mo, zo, SK, U, T, Hkv, (T + TB - 1) / TB, delta, eps};
    parallel_for(write_prep_item, &j, Hkv * j.nblk, n_threads);
    parallel_for(write_sum_item, &j, Hkv * (D / 4), n_threads);
    free(SK);
    free(U);
    return 0;
}
