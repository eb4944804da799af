/* Causal flash attention for one segment, bf16 in / bf16 out, on AVX-512 BF16 CPUs (Zen 4, Sapphire Rapids).
 *
 * out[b, t, h, :] = softmax_j≤t(q[b,h,t]·k[b,h/G,j] · scale) · v[b,h/G,:]        (G = H / Hkv, GQA)
 *
 * Dot products run on the bf16 dot-product instruction (vdpbf16ps: pairs of bf16 multiplied, summed into fp32),
 * scores and the online softmax stay in fp32; only the softmax weights P are rounded to bf16 before P·V,
 * as GPU flash attention does. Head dim must be 64. Work items are (batch, query head, block of 64 queries);
 * a small pool of pthreads takes them from an atomic counter, largest first. Given RoPE tables, the kernel
 * rotates the queries and keys itself as it loads them (the reading path then makes no pass of its own for it).
 *
 * Built on first use by infinicli/kernels/__init__.py with the system C compiler; callers fall back to
 * torch's scaled_dot_product_attention when it cannot be built or the CPU lacks AVX512-BF16.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define D 64          /* head dim */
#define BLK 64        /* queries per work item = keys per block */
#define RG 4          /* query rows per register tile */

typedef struct {
    const bf16 *q;
    bf16 *out;
    const uint32_t *kp, *vp; /* packed keys / values, per (b, kv head) */
    const float *cos, *sin;  /* NULL, or RoPE tables [T][64] applied to the queries here (keys when packed) */
    int B, H, Hkv, T, nblk;
    long qs_b, qs_h, qs_t, os_b, os_h, os_t;
    float scale_log2e;
    int n_items;
} job_t;

/* dst = RoPE(src) at position t (Llama's rotate-half: x·cos + (−x₂, x₁)·sin), fp32 math, bf16 out; or a copy */
static inline void rope_row(bf16 *dst, const bf16 *src, const float *cos, const float *sin, int t) {
    if (!cos) {
        memcpy(dst, src, D * sizeof(bf16));
        return;
    }
    const float *c = cos + (long)t * D, *s = sin + (long)t * D;
    __m512 x0 = load_bf16(src), x1 = load_bf16(src + 16), x2 = load_bf16(src + 32), x3 = load_bf16(src + 48);
    store_bf16(dst, _mm512_fnmadd_ps(x2, _mm512_loadu_ps(s), _mm512_mul_ps(x0, _mm512_loadu_ps(c))));
    store_bf16(dst + 16, _mm512_fnmadd_ps(x3, _mm512_loadu_ps(s + 16), _mm512_mul_ps(x1, _mm512_loadu_ps(c + 16))));
    store_bf16(dst + 32, _mm512_fmadd_ps(x0, _mm512_loadu_ps(s + 32), _mm512_mul_ps(x2, _mm512_loadu_ps(c + 32))));
    store_bf16(dst + 48, _mm512_fmadd_ps(x1, _mm512_loadu_ps(s + 48), _mm512_mul_ps(x3, _mm512_loadu_ps(c + 48))));
}

static inline __m512 dp(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

/* One work item: 64 queries of one head against all keys up to the diagonal. */
static void attend_block(const job_t *j, int item) {
    const int nbh = j->B * j->H;
    const int qb = j->nblk - 1 - item / nbh; /* the largest (last) query blocks of every head first */
    const int bh = item % nbh;
    const int b = bh / j->H, h = bh % j->H;
    const int g = h / (j->H / j->Hkv);
    const long tpad = (long)j->nblk * BLK;
    const uint32_t *kp = j->kp + ((long)b * j->Hkv + g) * tpad * (D / 2);
    const uint32_t *vp = j->vp + ((long)b * j->Hkv + g) * tpad * (D / 2);
    const int q0 = qb * BLK;

    float O[BLK][D] __attribute__((aligned(64)));
    float m[BLK], l[BLK];
    uint32_t qrow[BLK][D / 2] __attribute__((aligned(64)));   /* queries as bf16 pairs */
    uint32_t P[RG][BLK / 2] __attribute__((aligned(64)));     /* softmax weights as bf16 pairs */
    memset(O, 0, sizeof O);
    for (int r = 0; r < BLK; r++) {
        int t = q0 + r < j->T ? q0 + r : j->T - 1; /* rows past the end repeat the last (not stored) */
        rope_row((bf16 *)qrow[r], j->q + b * j->qs_b + h * j->qs_h + (long)t * j->qs_t, j->cos, j->sin, t);
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    const __m512 sc = _mm512_set1_ps(j->scale_log2e);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);

    for (int kb = 0; kb <= qb; kb++) {
        const uint32_t *kblk = kp + (long)kb * BLK * (D / 2); /* [4 groups of 16 keys][32 pairs][16] */
        const uint32_t *vblk = vp + (long)kb * BLK * (D / 2); /* [32 key pairs][64 d] */
        const int diag = kb == qb;
        for (int r0 = 0; r0 < BLK; r0 += RG) {
            /* S = Q K^T for RG rows x 64 keys, fp32 in registers */
            __m512 s[RG][4];
            for (int r = 0; r < RG; r++)
                for (int c = 0; c < 4; c++) s[r][c] = _mm512_setzero_ps();
            for (int p = 0; p < D / 2; p++) {
                __m512i k0 = _mm512_load_si512(kblk + (0 * (D / 2) + p) * 16);
                __m512i k1 = _mm512_load_si512(kblk + (1 * (D / 2) + p) * 16);
                __m512i k2 = _mm512_load_si512(kblk + (2 * (D / 2) + p) * 16);
                __m512i k3 = _mm512_load_si512(kblk + (3 * (D / 2) + p) * 16);
                for (int r = 0; r < RG; r++) {
                    __m512i qv = _mm512_set1_epi32((int)qrow[r0 + r][p]);
                    s[r][0] = dp(s[r][0], qv, k0);
                    s[r][1] = dp(s[r][1], qv, k1);
                    s[r][2] = dp(s[r][2], qv, k2);
                    s[r][3] = dp(s[r][3], qv, k3);
                }
            }
            /* online softmax per row (base 2), causal mask on the diagonal block */
            float alpha[RG];
            for (int r = 0; r < RG; r++) {
                const int row = r0 + r;
                __mmask16 keep[4];
                for (int c = 0; c < 4; c++) {
                    keep[c] = diag ? _mm512_cmple_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(c * 16)),
                                                             _mm512_set1_epi32(row))
                                   : (__mmask16)0xFFFF;
                    s[r][c] = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), keep[c], s[r][c], sc);
                }
                __m512 mx = _mm512_max_ps(_mm512_max_ps(s[r][0], s[r][1]), _mm512_max_ps(s[r][2], s[r][3]));
                float mblk = _mm512_reduce_max_ps(mx);
                float mnew = m[row] > mblk ? m[row] : mblk;
                alpha[r] = m[row] == -INFINITY ? 0.0f : exp2f(m[row] - mnew);
                m[row] = mnew;
                __m512 mv = _mm512_set1_ps(mnew);
                __m512 sum = _mm512_setzero_ps();
                for (int c = 0; c < 4; c++) {
                    __m512 pv = _mm512_maskz_mov_ps(keep[c], exp2_ps(_mm512_sub_ps(s[r][c], mv)));
                    sum = _mm512_add_ps(sum, pv);
                    _mm256_store_si256((__m256i *)((bf16 *)P[r] + c * 16), (__m256i)_mm512_cvtneps_pbh(pv));
                }
                l[row] = l[row] * alpha[r] + _mm512_reduce_add_ps(sum);
            }
            /* O = alpha O + P V for the RG rows */
            __m512 o[RG][4];
            for (int r = 0; r < RG; r++) {
                __m512 a = _mm512_set1_ps(alpha[r]);
                for (int c = 0; c < 4; c++) o[r][c] = _mm512_mul_ps(a, _mm512_load_ps(&O[r0 + r][c * 16]));
            }
            const int npairs = diag ? (r0 + RG + 1) / 2 : BLK / 2; /* keys past the last row's are all 0 */
            for (int kpi = 0; kpi < npairs; kpi++) {
                __m512i v0 = _mm512_load_si512(vblk + kpi * D + 0);
                __m512i v1 = _mm512_load_si512(vblk + kpi * D + 16);
                __m512i v2 = _mm512_load_si512(vblk + kpi * D + 32);
                __m512i v3 = _mm512_load_si512(vblk + kpi * D + 48);
                for (int r = 0; r < RG; r++) {
                    __m512i pv = _mm512_set1_epi32((int)P[r][kpi]);
                    o[r][0] = dp(o[r][0], pv, v0);
                    o[r][1] = dp(o[r][1], pv, v1);
                    o[r][2] = dp(o[r][2], pv, v2);
                    o[r][3] = dp(o[r][3], pv, v3);
                }
            }
            for (int r = 0; r < RG; r++)
                for (int c = 0; c < 4; c++) _mm512_store_ps(&O[r0 + r][c * 16], o[r][c]);
        }
    }
    for (int r = 0; r < BLK && q0 + r < j->T; r++) {
        bf16 *dst = j->out + b * j->os_b + h * j->os_h + (long)(q0 + r) * j->os_t;
        __m512 inv = _mm512_set1_ps(1.0f / l[r]);
        for (int c = 0; c < 4; c++)
            _mm256_storeu_si256((__m256i *)(dst + c * 16),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(inv, _mm512_load_ps(&O[r][c * 16]))));
    }
}

static void attend_item(void *ctx, int item) { attend_block((const job_t *)ctx, item); }

/* Pack keys as [16-key group][32 d-pairs][16 keys] and values as [key pair][64 d] (bf16 pairs in uint32),
 * zero-padded to a multiple of 64 keys. */
static void pack_kv(const bf16 *k, const bf16 *v, long ks_t, long vs_t, int T, int tpad, uint32_t *kp,
                    uint32_t *vp, const float *cos, const float *sin) {
    memset(kp, 0, (size_t)tpad * D * sizeof(bf16));
    memset(vp, 0, (size_t)tpad * D * sizeof(bf16));
    for (int t = 0; t < T; t++) {
        uint32_t krow[D / 2] __attribute__((aligned(64)));
        rope_row((bf16 *)krow, k + (long)t * ks_t, cos, sin, t);
        uint32_t *dst = kp + (long)(t / 16) * (D / 2) * 16 + t % 16;
        for (int p = 0; p < D / 2; p++) dst[p * 16] = krow[p];
    }
    for (int t = 0; t < T; t++) {
        const bf16 *vrow = v + (long)t * vs_t;
        bf16 *dst = (bf16 *)(vp + (long)(t / 2) * D) + (t % 2);
        for (int e = 0; e < D; e++) dst[2 * e] = vrow[e];
    }
}

/* Returns 0 on success, -1 on bad arguments or allocation failure (the caller then falls back).
 * cos, sin: NULL, or RoPE tables [T][64] (fp32) to apply to q and k first (positions 0..T-1). */
int infini_causal_attention(const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, int B, int H, int Hkv,
                            int T, int d, long qs_b, long qs_h, long qs_t, long ks_b, long ks_h, long ks_t,
                            long vs_b, long vs_h, long vs_t, long os_b, long os_h, long os_t, float scale,
                            const float *cos, const float *sin, int n_threads) {
    if (d != D || B < 1 || T < 1 || Hkv < 1 || H % Hkv != 0 || !cos != !sin) return -1;
    const int nblk = (T + BLK - 1) / BLK;
    const long tpad = (long)nblk * BLK;
    size_t bytes = (size_t)B * Hkv * tpad * D * sizeof(bf16);
    uint32_t *kp = aligned_alloc(64, bytes), *vp = aligned_alloc(64, bytes);
    if (!kp || !vp) {
        free(kp);
        free(vp);
        return -1;
    }
    for (int b = 0; b < B; b++)
        for (int g = 0; g < Hkv; g++) {
            long off = ((long)b * Hkv + g) * tpad * (D / 2);
            pack_kv(k + b * ks_b + g * ks_h, v + b * vs_b + g * vs_h, ks_t, vs_t, T, (int)tpad, kp + off,
                    vp + off, cos, sin);
        }
    job_t j = {q, out, kp, vp, cos, sin, B, H, Hkv, T, nblk, qs_b, qs_h, qs_t, os_b, os_h, os_t,
               scale * LOG2E, B * H * nblk};
    parallel_for(attend_item, &j, j.n_items, n_threads);
    free(kp);
    free(vp);
    return 0;
}
