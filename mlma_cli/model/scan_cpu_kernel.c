/* mlma's CPU selective-scan kernel (see scan_cpu_kernel.py, which builds and calls it through ctypes).
   Plain C99, no torch headers: it compiles in about a second with cc, gcc, clang or zig cc. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Branch-free elementary functions so that the compiler vectorizes every loop that calls them.
   exp: Cody-Waite reduction x = k ln2 + r, degree-6 polynomial (Cephes coefficients, ~1 ulp); input
   clamped to [-87, 88], so below -87 it returns ~1.6e-38 instead of 0 (irrelevant as a decay). */
static inline float mlma_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float k = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)k + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

/* log for finite x >= 1 (only used on 1 + exp(x)): x = m 2^e with m in [sqrt(.5), sqrt(2)),
   polynomial in m - 1 (Cephes coefficients). */
static inline float mlma_log(float x) {
    int32_t i;
    memcpy(&i, &x, sizeof i);
    float e = (float)(((i >> 23) & 0xff) - 126);
    i = (i & 0x007fffff) | 0x3f000000;
    float m;
    memcpy(&m, &i, sizeof m);  /* m in [0.5, 1) */
    const int small = m < 0.70710678f;
    e = small ? e - 1.0f : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return m + y + 0.693359375f * e;
}

/* softplus = log(1 + e^x): x itself above 20, e^x below -15 (keeps relative accuracy), else the log */
static inline float mlma_softplus(float x) {
    const float ex = mlma_exp(x);
    const float mid = mlma_log(1.0f + ex);
    return x > 20.0f ? x : (x < -15.0f ? ex : mid);
}

static inline float mlma_sigmoid(float x) { return 1.0f / (1.0f + mlma_exp(-x)); }

typedef struct {
    const float *u, *delta, *A, *Bt, *Ct, *D, *z, *bias;  /* D, z, bias may be NULL */
    int64_t Bsz, Dch, L, N;
    int softplus;
} scan_args;

/* delta' for one row (vectorized over t) */
static inline void row_delta(const scan_args *a, const float *delta, float bias, float *dl) {
    const int64_t L = a->L;
    if (a->softplus)
        for (int64_t t = 0; t < L; t++) dl[t] = mlma_softplus(delta[t] + bias);
    else
        for (int64_t t = 0; t < L; t++) dl[t] = delta[t] + bias;
}

/* The recurrence for one row: ys[t] = <C_t, h_t>. Bt, Ct: (L, N) of this batch item; A: (N,).
   hbuf (L*N, NULL in forward) receives h_t, abuf receives exp(delta_t A). */
static inline void row_scan(const float *restrict u, const float *restrict dl,
                            const float *restrict A, const float *restrict Bt,
                            const float *restrict Ct, float *restrict ys, int64_t L, const int64_t N,
                            float *restrict hbuf, float *restrict abuf) {
    float h[64];
    for (int64_t n = 0; n < N; n++) h[n] = 0.0f;
    for (int64_t t = 0; t < L; t++) {
        const float dt = dl[t], du = dt * u[t];
        const float *b = Bt + t * N, *c = Ct + t * N;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float av = mlma_exp(dt * A[n]);
            h[n] = av * h[n] + du * b[n];
            acc += h[n] * c[n];
            if (abuf) abuf[t * N + n] = av;
            if (hbuf) hbuf[t * N + n] = h[n];
        }
        ys[t] = acc;
    }
}

#define DISPATCH_N(CALL) \
    if (N == 16) { const int64_t NN = 16; CALL(NN); } \
    else if (N == 8) { const int64_t NN = 8; CALL(NN); } \
    else { CALL(N); }

/* Forward for channels [d0, d1) of every batch item; y: (Bsz, D, L). Returns 1 if out of memory. */
int mlma_scan_fwd(const float *u, const float *delta, const float *A, const float *Bt,
                  const float *Ct, const float *D, const float *z, const float *bias, int softplus,
                  float *y, int64_t Bsz, int64_t Dch, int64_t L, int64_t N, int64_t d0, int64_t d1) {
    scan_args a = {u, delta, A, Bt, Ct, D, z, bias, Bsz, Dch, L, N, softplus};
    float *dl = (float *)malloc(sizeof(float) * 2 * (size_t)L);
    if (!dl) return 1;
    float *ys = dl + L;
    for (int64_t b = 0; b < Bsz; b++)
        for (int64_t d = d0; d < d1; d++) {
            const int64_t row = (b * Dch + d) * L, off = b * L * N;
            row_delta(&a, delta + row, bias ? bias[d] : 0.0f, dl);
#define FWD(NV) row_scan(u + row, dl, A + d * N, Bt + off, Ct + off, ys, L, NV, NULL, NULL)
            DISPATCH_N(FWD)
#undef FWD
            const float Dd = D ? D[d] : 0.0f;
            const float *ur = u + row;
            float *yr = y + row;
            if (z) {
                const float *zr = z + row;
                for (int64_t t = 0; t < L; t++) yr[t] = (ys[t] + Dd * ur[t]) * zr[t] * mlma_sigmoid(zr[t]);
            } else {
                for (int64_t t = 0; t < L; t++) yr[t] = ys[t] + Dd * ur[t];
            }
        }
    free(dl);
    return 0;
}

/* Reverse pass of one row given dys = dL/dys (gradient of the recurrence output). Writes du_s (the
   recurrence's du) and dd (dL/d delta'), accumulates dA (N), dBt, dCt (L, N). */
static inline void row_bwd(const float *restrict u, const float *restrict dl,
                           const float *restrict A, const float *restrict Bt,
                           const float *restrict Ct, const float *restrict dys,
                           float *restrict du_s, float *restrict dd, float *restrict dA,
                           float *restrict dBt, float *restrict dCt, int64_t L, const int64_t N,
                           const float *restrict hbuf, const float *restrict abuf) {
    /* hbuf row 0 holds h_{-1} = 0, row t+1 holds h_t: h_{t-1} is always a plain read */
    float gn[64];  /* exp(delta'_{t+1} A) * g_{t+1}: the gradient reaching h_t from step t+1 */
    float dAl[64];
    for (int64_t n = 0; n < N; n++) gn[n] = dAl[n] = 0.0f;
    for (int64_t t = L - 1; t >= 0; t--) {
        const float g_y = dys[t], dt = dl[t], ut = u[t], du_t = dt * ut;
        const float *b = Bt + t * N, *c = Ct + t * N, *av = abuf + t * N;
        const float *hp = hbuf + t * N, *h = hbuf + (t + 1) * N;
        float *db = dBt + t * N, *dc = dCt + t * N;
        float s_da = 0.0f, s_gb = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float g = g_y * c[n] + gn[n];   /* dL/dh_t */
            dc[n] += g_y * h[n];
            const float x = g * hp[n] * av[n];    /* dL/d(delta'_t A_n) */
            s_da += x * A[n];
            dAl[n] += x * dt;
            s_gb += g * b[n];
            db[n] += g * du_t;
            gn[n] = av[n] * g;
        }
        dd[t] = s_da + ut * s_gb;
        du_s[t] = dt * s_gb;
    }
    for (int64_t n = 0; n < N; n++) dA[n] += dAl[n];
}

/* Backward for channels [d0, d1). Writes du, ddelta, dz (if z) rows; dA, dD, dbias at [d0, d1)
   (owned by this range); accumulates into this worker's private dBt, dCt (Bsz, L, N).
   Returns 1 if out of memory. */
int mlma_scan_bwd(const float *u, const float *delta, const float *A, const float *Bt,
                  const float *Ct, const float *D, const float *z, const float *bias, int softplus,
                  const float *dy, float *du, float *ddelta, float *dA, float *dBt, float *dCt,
                  float *dD, float *dz, float *dbias,
                  int64_t Bsz, int64_t Dch, int64_t L, int64_t N, int64_t d0, int64_t d1) {
    scan_args a = {u, delta, A, Bt, Ct, D, z, bias, Bsz, Dch, L, N, softplus};
    float *buf = (float *)malloc(sizeof(float) * ((2 * (size_t)L + 1) * (size_t)N + 4 * (size_t)L));
    if (!buf) return 1;
    float *hbuf = buf, *abuf = buf + (L + 1) * N;
    float *dl = abuf + L * N, *ys = dl + L, *dys = ys + L, *dd = dys + L;
    for (int64_t d = d0; d < d1; d++) {
        const float Dd = D ? D[d] : 0.0f, bd = bias ? bias[d] : 0.0f;
        float dD_acc = 0.0f, db_acc = 0.0f;
        for (int64_t b = 0; b < Bsz; b++) {
            const int64_t row = (b * Dch + d) * L, off = b * L * N;
            const float *ur = u + row, *dyr = dy + row;
            float *dur = du + row, *ddr = ddelta + row;
            row_delta(&a, delta + row, bd, dl);
            for (int64_t n = 0; n < N; n++) hbuf[n] = 0.0f;
#define REC(NV) row_scan(ur, dl, A + d * N, Bt + off, Ct + off, ys, L, NV, hbuf + N, abuf)
            DISPATCH_N(REC)
#undef REC
            /* gate and skip: y = (ys + D u) * silu(z) */
            if (z) {
                const float *zr = z + row;
                float *dzr = dz + row;
                for (int64_t t = 0; t < L; t++) {
                    const float sg = mlma_sigmoid(zr[t]);
                    const float pre = ys[t] + Dd * ur[t];
                    dys[t] = dyr[t] * zr[t] * sg;
                    dzr[t] = dyr[t] * pre * sg * (1.0f + zr[t] * (1.0f - sg));
                }
            } else {
                for (int64_t t = 0; t < L; t++) dys[t] = dyr[t];
            }
            for (int64_t t = 0; t < L; t++) dD_acc += dys[t] * ur[t];
#define BWD(NV) row_bwd(ur, dl, A + d * N, Bt + off, Ct + off, dys, dur, dd, dA + d * N, dBt + off, \
                        dCt + off, L, NV, hbuf, abuf)
            DISPATCH_N(BWD)
#undef BWD
            for (int64_t t = 0; t < L; t++) dur[t] += Dd * dys[t];
            if (softplus) {
                const float *dr = delta + row;
                for (int64_t t = 0; t < L; t++) ddr[t] = dd[t] * mlma_sigmoid(dr[t] + bd);
            } else {
                for (int64_t t = 0; t < L; t++) ddr[t] = dd[t];
            }
            for (int64_t t = 0; t < L; t++) db_acc += ddr[t];
        }
        if (dD) dD[d] = dD_acc;
        if (dbias) dbias[d] = db_acc;
    }
    free(buf);
    return 0;
}
