/* mlma's CPU selective-scan kernel (see scan_cpu_kernel.py, which builds and calls it through ctypes).
   Plain C99, no torch headers: it compiles in about a second with cc, gcc, clang or zig cc. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Branch-free elementary functions so that the compiler vectorizes every loop that calls them.
   exp: Cody-Waite reduction x = k ln2 + r, degree-6 polynomial (Cephes coefficients, ~1 ulp); input
   clamped to [-87, 88], so below -87 it returns ~1.6e-38 instead of 0 (irrelevant as a decay). */
static inline float mlma_exp_clamped(float x) {  /* x already in [-87, 88] */
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

static inline float mlma_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    return mlma_exp_clamped(x);
}

/* mlma_exp for x <= 88 (the scan's decays exp(delta' A) with delta' >= 0, A < 0): the same value, one clamp less */
static inline float mlma_exp_upto88(float x) {
    x = x < -87.0f ? -87.0f : x;
    return mlma_exp_clamped(x);
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
   order (NULL: t = s) gives the time index t visited at step s, so one routine runs both directions; hbuf
   (NULL in forward) receives the state after step s at row s, abuf the decay exp(delta_t A) of step s. */
static inline void row_scan(const float *restrict u, const float *restrict dl,
                            const float *restrict A, const float *restrict Bt,
                            const float *restrict Ct, float *restrict ys, int64_t L, const int64_t N,
                            float *restrict hbuf, float *restrict abuf, const int64_t *restrict order) {
    float h[64];
    for (int64_t n = 0; n < N; n++) h[n] = 0.0f;
    for (int64_t s = 0; s < L; s++) {
        const int64_t t = order ? order[s] : s;
        const float dt = dl[t], du = dt * u[t];
        const float *b = Bt + t * N, *c = Ct + t * N;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float av = mlma_exp(dt * A[n]);
            h[n] = av * h[n] + du * b[n];
            acc += h[n] * c[n];
            if (abuf) abuf[s * N + n] = av;
            if (hbuf) hbuf[s * N + n] = h[n];
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
#define FWD(NV) row_scan(u + row, dl, A + d * N, Bt + off, Ct + off, ys, L, NV, NULL, NULL, NULL)
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
   recurrence's du) and dd (dL/d delta'), accumulates dA (N), dBt, dCt (L, N). order as in row_scan; steps are
   undone last to first. */
static inline void row_bwd(const float *restrict u, const float *restrict dl,
                           const float *restrict A, const float *restrict Bt,
                           const float *restrict Ct, const float *restrict dys,
                           float *restrict du_s, float *restrict dd, float *restrict dA,
                           float *restrict dBt, float *restrict dCt, int64_t L, const int64_t N,
                           const float *restrict hbuf, const float *restrict abuf,
                           const int64_t *restrict order) {
    /* hbuf row 0 holds the state before the first step (0), row s+1 the state after step s */
    float gn[64];  /* decay of step s+1 times its g: the gradient reaching the state after step s from s+1 */
    float dAl[64];
    for (int64_t n = 0; n < N; n++) gn[n] = dAl[n] = 0.0f;
    for (int64_t s = L - 1; s >= 0; s--) {
        const int64_t t = order ? order[s] : s;
        const float g_y = dys[t], dt = dl[t], ut = u[t], du_t = dt * ut;
        const float *b = Bt + t * N, *c = Ct + t * N, *av = abuf + s * N;
        const float *hp = hbuf + s * N, *h = hbuf + (s + 1) * N;
        float *db = dBt + t * N, *dc = dCt + t * N;
        float s_da = 0.0f, s_gb = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float g = g_y * c[n] + gn[n];   /* dL/dh after this step */
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
#define REC(NV) row_scan(ur, dl, A + d * N, Bt + off, Ct + off, ys, L, NV, hbuf + N, abuf, NULL)
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
                        dCt + off, L, NV, hbuf, abuf, NULL)
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

/* ---- Both directions of a bidirectional mixer, time-major ---------------------------------------------------------
   Channels are the fast axis everywhere, so every loop runs across a block of BW channels (one AVX-512 vector, two
   AVX2 ones) and the state update needs no horizontal sum; the frames of a sequence are rows. Two kernels, called
   between the mixer's matmuls (and their backward passes further down):
     mlma_biconv_tm:     u = silu(conv(x) + bias) for both directions (the backward direction's conv runs over the
                         sequence reversed within its length, i.e. anti-causally), reading x straight out of in_proj's
                         output and writing u as (2, Bsz, L, E);
     mlma_biscan_tm_fwd: both scans over u, x_proj's (dt, B, C) rows and delta (2, Bsz, L, E), the backward one
                         visiting t = len-1, ..., 0 and then the padded frames (so no reversed copies exist), into
                         y (Bsz, L, E) = 0.5 * sum over directions of (<C_t, h_t> + D u_t), times silu(z_t).
   Work is split into units of (batch item, block of BW channels); mlma_run spreads units over the OpenMP threads of
   the libgomp the caller passes (torch's own, so no second thread pool competes for the cores). */
#define BW 16

/* a range function does units [unit0, unit1); slot (< the thread count) names the caller's private accumulators */
typedef int (*mlma_range_fn)(const void *args, int64_t unit0, int64_t unit1, int64_t slot);
typedef void (*mlma_gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*mlma_omp_int_fn)(void);

typedef struct {
    mlma_range_fn fn;
    const void *args;
    int64_t units;
    mlma_omp_int_fn thread_num, num_threads;
    volatile int failed;
} mlma_job;

static void mlma_job_body(void *p) {
    mlma_job *j = (mlma_job *)p;
    const int64_t tid = j->thread_num(), nth = j->num_threads();
    const int64_t u0 = j->units * tid / nth, u1 = j->units * (tid + 1) / nth;
    if (u1 > u0 && j->fn(j->args, u0, u1, tid)) j->failed = 1;
}

/* fn(args, 0, units) on nthreads OpenMP threads through GOMP_parallel (gomp_parallel, thread_num and num_threads are
   libgomp's GOMP_parallel, omp_get_thread_num and omp_get_num_threads); serially when gomp_parallel is NULL or
   nthreads < 2. Returns nonzero if any part failed. */
int mlma_run(mlma_range_fn fn, const void *args, int64_t units, int64_t nthreads, void *gomp_parallel,
             void *thread_num, void *num_threads) {
    if (!gomp_parallel || nthreads < 2 || units < 2) return fn(args, 0, units, 0);
    mlma_job j = {fn, args, units, (mlma_omp_int_fn)thread_num, (mlma_omp_int_fn)num_threads, 0};
    ((mlma_gomp_parallel_fn)gomp_parallel)(mlma_job_body, &j, (unsigned)(nthreads < units ? nthreads : units), 0);
    return j.failed;
}

typedef struct {
    const float *x;          /* x[b*xb + t*xt + c]: the first E channels of in_proj's output rows */
    const float *w;          /* (2, K, E): w[0][k] = conv1d.weight[:, 0, k], w[1][k] = conv1d_b.weight[:, 0, k] */
    const float *bias;       /* (2, E) */
    const int64_t *lengths;  /* (Bsz,) or NULL (all L) */
    float *u;                /* (2, Bsz, L, E) */
    int64_t xb, xt, Bsz, E, L, K;
} biconv_tm_args;

/* u[0][t] = silu(b0 + sum_k w0[k] x[t-K+1+k]) (causal), u[1][t] = silu(b1 + sum_k w1[k] x[t+K-1-k]) (the causal conv
   of the sequence reversed within its length, read in original order); x is zero outside [0, len). Channels
   [c, c + W) of batch item b: no state, so the loops run over the whole channel range. */
static void biconv_rows(const biconv_tm_args *a, int64_t b, int64_t c, int64_t W) {
    const int64_t E = a->E, L = a->L, K = a->K, len = a->lengths ? a->lengths[b] : a->L;
    const float *x = a->x + b * a->xb + c;
    for (int dir = 0; dir < 2; dir++) {
        const float *restrict bias = a->bias + dir * E + c;
        for (int64_t t = 0; t < L; t++) {
            /* tap k reads frame t - (K-1) + k (dir 0) or t + (K-1) - k (dir 1): those in [0, len) contribute */
            int64_t k0 = dir ? t + K - len : K - 1 - t, k1 = dir ? t + K : len - t + K - 1;
            k0 = k0 < 0 ? 0 : k0;
            k1 = k1 > K ? K : k1;
            float *restrict ut = a->u + ((dir * a->Bsz + b) * L + t) * E + c;
            for (int64_t j = 0; j < W; j++) ut[j] = bias[j];
            for (int64_t k = k0; k < k1; k++) {
                const float *restrict xs = x + (dir ? t + K - 1 - k : t - K + 1 + k) * a->xt;
                const float *restrict wk = a->w + (dir * K + k) * E + c;
                for (int64_t j = 0; j < W; j++) ut[j] += wk[j] * xs[j];
            }
            for (int64_t j = 0; j < W; j++) ut[j] *= mlma_sigmoid(ut[j]);
        }
    }
}

/* units: (batch item, channel block) pairs, b-major; consecutive blocks of one item are done as one range */
int mlma_biconv_tm(const void *args, int64_t unit0, int64_t unit1, int64_t slot) {
    (void)slot;
    const biconv_tm_args *a = (const biconv_tm_args *)args;
    const int64_t blocks = (a->E + BW - 1) / BW;
    for (int64_t i = unit0; i < unit1;) {
        const int64_t b = i / blocks, end = (b + 1) * blocks < unit1 ? (b + 1) * blocks : unit1;
        const int64_t c0 = (i - b * blocks) * BW, c1 = (end - b * blocks) * BW;
        biconv_rows(a, b, c0, (c1 < a->E ? c1 : a->E) - c0);
        i = end;
    }
    return 0;
}

typedef struct {
    const float *u, *delta;  /* (2, Bsz, L, E) */
    const float *At;         /* (2, N, E): A transposed */
    const float *bc;         /* B_t of (dir, b) at bc[((dir*Bsz + b)*L + t)*bcs + n], C_t at + N */
    const float *D, *bias;   /* (2, E) or NULL */
    const float *z;          /* z[b*zb + t*zt + c] or NULL */
    const int64_t *lengths;  /* (Bsz,) or NULL */
    float *y;                /* (Bsz, L, E) */
    int64_t bcs, zb, zt, Bsz, E, L, N;
    int softplus;
} biscan_tm_args;

/* One direction of one channel block: where its inputs start, and its per-channel constants. */
typedef struct {
    const float *u, *delta, *At, *bc;
    float bias[BW], D[BW];
} tm_dir;

static inline __attribute__((always_inline)) void tm_dir_init(tm_dir *d, const biscan_tm_args *a, int64_t b,
                                                              int64_t c, int dir, const int64_t W, const int64_t N) {
    const int64_t E = a->E, row0 = (dir * a->Bsz + b) * a->L;
    d->u = a->u + row0 * E + c;
    d->delta = a->delta + row0 * E + c;
    d->At = a->At + dir * N * E + c;
    d->bc = a->bc + row0 * a->bcs;
    for (int64_t j = 0; j < W; j++) {
        d->bias[j] = a->bias ? a->bias[dir * E + c + j] : 0.0f;
        d->D[j] = a->D ? a->D[dir * E + c + j] : 0.0f;
    }
}

/* The frame step s visits: the backward direction visits len-1, ..., 0, then the padded frames (whose outputs are
   unspecified). */
static inline int64_t tm_frame(int dir, int64_t s, int64_t len) { return dir == 0 || s >= len ? s : len - 1 - s; }

/* One step of a direction's recurrence at frame t: delta' into dl, y = <C_t, h_t>. KEEP = 0: the states h (N rows
   of BW) are updated in place; KEEP = 1 (backward): read from hp, written to h. SP: softplus on delta (then
   delta' >= 0 and every decay's exponent is <= 0). N == 16 is unrolled. */
static inline __attribute__((always_inline)) void tm_step(const tm_dir *d, const biscan_tm_args *a, int64_t t,
                                                          const int64_t W, const int64_t N, const int SP,
                                                          const int KEEP, float *dl, const float *hp, float *h,
                                                          float *y) {
    const int64_t E = a->E;
    const float *ut = d->u + t * E, *dt = d->delta + t * E, *bt = d->bc + t * a->bcs, *ct = bt + N;
    float du[BW];
    for (int64_t j = 0; j < W; j++) {
        const float v = dt[j] + d->bias[j];
        dl[j] = SP ? mlma_softplus(v) : v;
        du[j] = dl[j] * ut[j];
        y[j] = 0.0f;
    }
#pragma GCC unroll 16
    for (int64_t n = 0; n < N; n++) {
        const float bn = bt[n], cn = ct[n], *an = d->At + n * E;
        const float *restrict hpn = KEEP ? hp + n * BW : NULL;
        float *restrict hn = h + n * BW;
        for (int64_t j = 0; j < W; j++) {
            const float x = dl[j] * an[j], e = SP ? mlma_exp_upto88(x) : mlma_exp(x);
            const float hv = e * (KEEP ? hpn[j] : hn[j]) + du[j] * bn;
            hn[j] = hv;
            y[j] += hv * cn;
        }
    }
}

/* Channels [c, c + W) of batch item b, both directions. */
static inline __attribute__((always_inline)) void biscan_block(const biscan_tm_args *a, int64_t b, int64_t c,
                                                               const int64_t W, const int64_t N, const int SP) {
    const int64_t E = a->E, L = a->L, len = a->lengths ? a->lengths[b] : a->L;
    float h[64 * BW];
    for (int dir = 0; dir < 2; dir++) {
        tm_dir d;
        tm_dir_init(&d, a, b, c, dir, W, N);
        for (int64_t i = 0; i < N * BW; i++) h[i] = 0.0f;
        for (int64_t s = 0; s < L; s++) {
            const int64_t t = tm_frame(dir, s, len);
            const float *ut = d.u + t * E;
            float dl[BW], acc[BW];
            tm_step(&d, a, t, W, N, SP, 0, dl, NULL, h, acc);
            float *yt = a->y + (b * L + t) * E + c;
            if (dir == 0) {
                for (int64_t j = 0; j < W; j++) yt[j] = acc[j] + d.D[j] * ut[j];
            } else if (a->z) {
                const float *zt = a->z + b * a->zb + t * a->zt + c;
                for (int64_t j = 0; j < W; j++) {
                    const float pre = 0.5f * (yt[j] + (acc[j] + d.D[j] * ut[j]));
                    yt[j] = pre * zt[j] * mlma_sigmoid(zt[j]);
                }
            } else {
                for (int64_t j = 0; j < W; j++) yt[j] = 0.5f * (yt[j] + (acc[j] + d.D[j] * ut[j]));
            }
        }
    }
}

int mlma_biscan_tm_fwd(const void *args, int64_t unit0, int64_t unit1, int64_t slot) {
    (void)slot;
    const biscan_tm_args *a = (const biscan_tm_args *)args;
    const int64_t blocks = (a->E + BW - 1) / BW, N = a->N;
    for (int64_t i = unit0; i < unit1; i++) {
        const int64_t b = i / blocks, c = (i % blocks) * BW;
        if (c + BW > a->E) biscan_block(a, b, c, a->E - c, N, a->softplus);
        else if (N == 16 && a->softplus) biscan_block(a, b, c, BW, 16, 1);
        else if (a->softplus) biscan_block(a, b, c, BW, N, 1);
        else biscan_block(a, b, c, BW, N, 0);
    }
    return 0;
}

/* ---- Their backward passes (training) ----------------------------------------------------------------------------
   Gradients shared by work units (weights, per-channel parameters, B and C which every channel reads) go to the
   calling thread's private slot of an accumulator buffer; the caller sums the slots. */

typedef struct {
    biconv_tm_args f;
    const float *du;   /* (2, Bsz, L, E): gradient of u */
    float *dx;         /* dx[b*dxb + t*dxt + c]: written (not accumulated) at this unit's channels */
    float *acc;        /* per slot: dw (2, K, E), then dbias (2, E) */
    int64_t dxb, dxt, acc_stride;
} biconv_tm_bwd_args;

static int biconv_bwd_rows(const biconv_tm_bwd_args *g, int64_t b, int64_t c, int64_t W, float *acc) {
    const biconv_tm_args *a = &g->f;
    const int64_t E = a->E, L = a->L, K = a->K, len = a->lengths ? a->lengths[b] : a->L;
    const float *x = a->x + b * a->xb + c;
    float *dx = g->dx + b * g->dxb + c;
    float *pre = (float *)malloc(sizeof(float) * (size_t)W);
    if (!pre) return 1;
    for (int64_t t = 0; t < L; t++) {
        float *restrict dxt = dx + t * g->dxt;
        for (int64_t j = 0; j < W; j++) dxt[j] = 0.0f;
    }
    for (int dir = 0; dir < 2; dir++) {
        const float *restrict bias = a->bias + dir * E + c;
        float *restrict dbias = acc + 2 * K * E + dir * E + c;
        for (int64_t t = 0; t < L; t++) {
            int64_t k0 = dir ? t + K - len : K - 1 - t, k1 = dir ? t + K : len - t + K - 1;
            k0 = k0 < 0 ? 0 : k0;
            k1 = k1 > K ? K : k1;
            float *restrict p = pre;
            for (int64_t j = 0; j < W; j++) p[j] = bias[j];
            for (int64_t k = k0; k < k1; k++) {
                const float *restrict xs = x + (dir ? t + K - 1 - k : t - K + 1 + k) * a->xt;
                const float *restrict wk = a->w + (dir * K + k) * E + c;
                for (int64_t j = 0; j < W; j++) p[j] += wk[j] * xs[j];
            }
            /* d silu(p) / dp = s (1 + p (1 - s)), s = sigmoid(p) */
            const float *restrict dut = g->du + ((dir * a->Bsz + b) * L + t) * E + c;
            for (int64_t j = 0; j < W; j++) {
                const float sg = mlma_sigmoid(p[j]);
                p[j] = dut[j] * sg * (1.0f + p[j] * (1.0f - sg));
                dbias[j] += p[j];
            }
            for (int64_t k = k0; k < k1; k++) {
                const int64_t s = dir ? t + K - 1 - k : t - K + 1 + k;
                const float *restrict xs = x + s * a->xt, *restrict wk = a->w + (dir * K + k) * E + c;
                float *restrict dxs = dx + s * g->dxt, *restrict dwk = acc + (dir * K + k) * E + c;
                for (int64_t j = 0; j < W; j++) {
                    dxs[j] += wk[j] * p[j];
                    dwk[j] += xs[j] * p[j];
                }
            }
        }
    }
    free(pre);
    return 0;
}

int mlma_biconv_tm_bwd(const void *args, int64_t unit0, int64_t unit1, int64_t slot) {
    const biconv_tm_bwd_args *g = (const biconv_tm_bwd_args *)args;
    const int64_t blocks = (g->f.E + BW - 1) / BW;
    for (int64_t i = unit0; i < unit1;) {
        const int64_t b = i / blocks, end = (b + 1) * blocks < unit1 ? (b + 1) * blocks : unit1;
        const int64_t c0 = (i - b * blocks) * BW, c1 = (end - b * blocks) * BW;
        if (biconv_bwd_rows(g, b, c0, (c1 < g->f.E ? c1 : g->f.E) - c0, g->acc + slot * g->acc_stride)) return 1;
        i = end;
    }
    return 0;
}

typedef struct {
    biscan_tm_args f;
    const float *dy;      /* (Bsz, L, E) contiguous */
    float *du, *ddelta;   /* (2, Bsz, L, E) */
    float *dz;            /* (Bsz, L, E) contiguous, or NULL */
    float *acc;           /* per slot: dAt (2, N, E), dD (2, E), dbias (2, E), dbc (2, Bsz, L, 2N) */
    int64_t acc_stride;
} biscan_tm_bwd_args;

/* Backward of biscan_block for channels [c, c + W) of batch item b. buf: this thread's work buffer. */
static inline __attribute__((always_inline)) void biscan_bwd_block(const biscan_tm_bwd_args *g, int64_t b,
                                                                   int64_t c, const int64_t W, const int64_t N,
                                                                   const int SP, float *buf, float *acc) {
    const biscan_tm_args *a = &g->f;
    const int64_t E = a->E, L = a->L, len = a->lengths ? a->lengths[b] : a->L;
    /* per step s: states after it (hb row s+1; row 0 is the zero start), delta' dl; per frame t: the gradient gy
       reaching both recurrences' outputs, direction 0's <C, h> + D u. The decays are recomputed in the reverse pass:
       one more exp per state is cheaper than storing them (the buffer would no longer fit in L2 from ~10 s on). */
    float *hb = buf, *dlb = hb + (L + 1) * N * BW, *gy = dlb + L * BW, *pre0 = gy + L * BW;
    const float *dy = g->dy + b * L * E + c;
    for (int64_t t = 0; t < L; t++) {
        const float *zt = a->z ? a->z + b * a->zb + t * a->zt + c : NULL;
        for (int64_t j = 0; j < W; j++)
            gy[t * BW + j] = 0.5f * dy[t * E + j] * (zt ? zt[j] * mlma_sigmoid(zt[j]) : 1.0f);
    }
    float *dAt = acc, *dD = acc + 2 * N * E, *dbias = dD + 2 * E, *dbc = dbias + 2 * E;
    for (int dir = 0; dir < 2; dir++) {
        tm_dir d;
        tm_dir_init(&d, a, b, c, dir, W, N);
        const int64_t row0 = (dir * a->Bsz + b) * L;
        const float *u = d.u, *delta = d.delta, *At = d.At, *bc = d.bc, *bias = d.bias, *Dd = d.D;
        float *du = g->du + row0 * E + c, *ddelta = g->ddelta + row0 * E + c, *dbcr = dbc + row0 * 2 * N;
        /* the recurrence again, keeping its states and decays */
        for (int64_t i = 0; i < N * BW; i++) hb[i] = 0.0f;
        for (int64_t s = 0; s < L; s++) {
            const int64_t t = tm_frame(dir, s, len);
            const float *ut = u + t * E;
            float acc_y[BW];
            tm_step(&d, a, t, W, N, SP, 1, dlb + s * BW, hb + s * N * BW, hb + (s + 1) * N * BW, acc_y);
            if (dir == 0) {
                for (int64_t j = 0; j < W; j++) pre0[t * BW + j] = acc_y[j] + Dd[j] * ut[j];
            } else if (g->dz) {
                /* y = 0.5 (pre0 + pre1) silu(z): dz = 0.5 dy (pre0 + pre1) silu'(z) */
                const float *zt = a->z + b * a->zb + t * a->zt + c;
                float *dzt = g->dz + (b * L + t) * E + c;
                for (int64_t j = 0; j < W; j++) {
                    const float sg = mlma_sigmoid(zt[j]), pre = pre0[t * BW + j] + (acc_y[j] + Dd[j] * ut[j]);
                    dzt[j] = 0.5f * dy[t * E + j] * pre * sg * (1.0f + zt[j] * (1.0f - sg));
                }
            }
        }
        /* the reverse recurrence: gh = dL/dh after step s, gn = the part of it coming from step s + 1 */
        float gn[64 * BW], dAl[64 * BW], dDl[BW], dbl[BW];
        for (int64_t i = 0; i < N * BW; i++) gn[i] = dAl[i] = 0.0f;
        for (int64_t j = 0; j < W; j++) dDl[j] = dbl[j] = 0.0f;
        for (int64_t s = L - 1; s >= 0; s--) {
            const int64_t t = tm_frame(dir, s, len);
            const float *ut = u + t * E, *bt = bc + t * a->bcs, *ct = bt + N, *gt = gy + t * BW, *dl = dlb + s * BW;
            float *dbt = dbcr + t * 2 * N, *dct = dbt + N;
            float ddl[BW], dsum[BW], dus[BW];
            for (int64_t j = 0; j < W; j++) {
                ddl[j] = dsum[j] = 0.0f;
                dus[j] = dl[j] * ut[j];
            }
            for (int64_t n = 0; n < N; n++) {
                const float bn = bt[n], cn = ct[n], *an = At + n * E;
                const float *hs = hb + ((s + 1) * N + n) * BW, *hp = hb + (s * N + n) * BW;
                float *gnn = gn + n * BW, *dAn = dAl + n * BW;
                float sc = 0.0f, sb = 0.0f;
                for (int64_t j = 0; j < W; j++) {
                    const float xa = dl[j] * an[j], av_j = SP ? mlma_exp_upto88(xa) : mlma_exp(xa);  /* the decay */
                    const float gh = gt[j] * cn + gnn[j];
                    sc += gt[j] * hs[j];
                    sb += gh * dus[j];
                    const float x = gh * hp[j] * av_j;   /* dL/d(delta' A) */
                    dAn[j] += x * dl[j];
                    ddl[j] += x * an[j];
                    dsum[j] += gh * bn;
                    gnn[j] = av_j * gh;
                }
                dct[n] += sc;
                dbt[n] += sb;
            }
            float *dut = du + t * E, *ddt = ddelta + t * E;
            const float *dt = delta + t * E;
            for (int64_t j = 0; j < W; j++) {
                dDl[j] += gt[j] * ut[j];
                dut[j] = dl[j] * dsum[j] + Dd[j] * gt[j];
                const float d = ddl[j] + ut[j] * dsum[j];    /* dL/d delta' */
                ddt[j] = SP ? d * mlma_sigmoid(dt[j] + bias[j]) : d;
                dbl[j] += ddt[j];
            }
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < W; j++) dAt[(dir * N + n) * E + c + j] += dAl[n * BW + j];
        for (int64_t j = 0; j < W; j++) {
            dD[dir * E + c + j] += dDl[j];
            dbias[dir * E + c + j] += dbl[j];
        }
    }
}

int mlma_biscan_tm_bwd(const void *args, int64_t unit0, int64_t unit1, int64_t slot) {
    const biscan_tm_bwd_args *g = (const biscan_tm_bwd_args *)args;
    const biscan_tm_args *a = &g->f;
    const int64_t blocks = (a->E + BW - 1) / BW, N = a->N, L = a->L;
    float *buf = (float *)malloc(sizeof(float) * (((size_t)L + 1) * (size_t)N * BW + 3 * (size_t)L * BW));
    if (!buf) return 1;
    float *acc = g->acc + slot * g->acc_stride;
    for (int64_t i = unit0; i < unit1; i++) {
        const int64_t b = i / blocks, c = (i % blocks) * BW;
        if (c + BW > a->E) biscan_bwd_block(g, b, c, a->E - c, N, a->softplus, buf, acc);
        else if (N == 16 && a->softplus) biscan_bwd_block(g, b, c, BW, 16, 1, buf, acc);
        else if (a->softplus) biscan_bwd_block(g, b, c, BW, N, 1, buf, acc);
        else biscan_bwd_block(g, b, c, BW, N, 0, buf, acc);
    }
    free(buf);
    return 0;
}
