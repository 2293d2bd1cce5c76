"""Optional compiled CPU kernel for the whole Mamba-1 selective scan (forward and backward).

A small C file (no torch headers, so it compiles in about a second) is built on first use, cached,
and called through ctypes on float32 CPU tensors. ctypes releases the GIL, so channel ranges run in
parallel on a thread pool of ``torch.get_num_threads()`` workers.

Compilers tried in order (:func:`compiler_candidates`): ``$CC``, else the first of cc / gcc / clang on
PATH, then Zig's clang-based ``zig cc`` from the ``ziglang`` PyPI package (``pip install mlma[kernel]``,
which tools/setup_env.sh installs), so the kernel builds from PyPI packages alone on a machine with no
system compiler. Everything here is an accelerator only: when no compiler works or ``MLMA_SCAN_KERNEL=0``
is set, :func:`load` returns None and the caller uses the pure-PyTorch scan; the log says which path ran.

Computed per (batch, channel) row, everything fused (one pass over the inputs):
    delta' = softplus(delta + bias) (or delta + bias)
    h_t = exp(delta'_t A) * h_{t-1} + delta'_t u_t B_t ;  y_t = (<C_t, h_t> + D u_t) * silu(z_t)
The backward recomputes the row's states into a per-thread buffer of L*N floats, then runs the
reverse recurrence g_t = dy_t C_t + exp(delta'_{t+1} A) g_{t+1}; nothing of size (B, D, L, N) is kept.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Tuple

import torch

log = logging.getLogger(__name__)

_C_SOURCE = r"""
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
"""

MAX_STATE = 64  # the C side keeps the state in a fixed array

_lock = threading.Lock()
_lib = None
_tried = False
_built_with: Optional[str] = None  # label of the compiler that built the loaded library
_pool: Optional[ThreadPoolExecutor] = None
_pool_key = (0, 0)  # (size, pid): a forked child (DataLoader worker) must not reuse the parent's dead threads


def _cache_dir() -> Path:
    """$MLMA_CACHE_DIR, else $XDG_CACHE_HOME/mlma or ~/.cache/mlma; a temp dir if that is not writable."""
    root = os.environ.get("MLMA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mlma")
    path = Path(root) / "scan_kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"mlma-scan-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_key() -> str:
    # -march=native output is only valid on the CPU that built it: key the cache on the CPU flags.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def compiler_candidates() -> List[Tuple[str, List[str]]]:
    """(label, command prefix) for each C compiler to try, in order; empty when there is none.

    ``$CC`` (may hold arguments) or the first of cc / gcc / clang on PATH, then ``zig cc`` from the
    ziglang wheel when it is installed (a complete clang toolchain shipped on PyPI).
    """
    found: List[Tuple[str, List[str]]] = []
    if os.environ.get("CC"):
        found.append((f"$CC={os.environ['CC']}", shlex.split(os.environ["CC"])))
    else:
        system = next((p for p in map(shutil.which, ("cc", "gcc", "clang")) if p), None)
        if system:
            found.append((system, [system]))
    if importlib.util.find_spec("ziglang") is not None:
        found.append(("zig cc (ziglang from PyPI)", [sys.executable, "-m", "ziglang", "cc"]))
    return found


_FLAGS = ["-O3", "-fPIC", "-shared", "-std=c99", "-fno-math-errno", "-fno-trapping-math",
          "-fassociative-math", "-fno-signed-zeros", "-ffp-contract=fast"]


def build_with(command: List[str], label: str = "") -> Optional[ctypes.CDLL]:
    """Build (or reuse from the cache) and load the kernel with one compiler; None if that fails.

    Tries ``-march=native`` first, then the portable baseline. The cache key covers the source, the
    compiler command, the flags and the CPU, so a library is never reused where it was not built for.
    """
    label = label or " ".join(command)
    env = dict(os.environ)
    # zig keeps its own build cache under $HOME, which may be read-only; ours is known to be writable
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(_cache_dir() / "zig"))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(_cache_dir() / "zig"))
    for arch in (["-march=native"], []):
        flags = _FLAGS + arch
        key = hashlib.sha256("\0".join([_C_SOURCE, *command, *flags, platform.machine(), _cpu_key()]).encode())
        out = _cache_dir() / f"mlma_scan_{key.hexdigest()[:16]}.so"
        if not out.exists():
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                src = Path(tmp) / "mlma_scan.c"
                src.write_text(_C_SOURCE)
                tmp_so = Path(tmp) / "mlma_scan.so"
                try:
                    proc = subprocess.run([*command, *flags, str(src), "-o", str(tmp_so)], capture_output=True,
                                          text=True, timeout=300, env=env)
                except (OSError, subprocess.TimeoutExpired) as e:
                    log.info("selective scan kernel: %s did not run: %s", label, e)
                    return None
                if proc.returncode != 0:
                    log.info("selective scan kernel build with %s %s failed: %s", label, arch,
                             proc.stderr.strip()[:500])
                    continue
                os.replace(tmp_so, out)  # atomic: concurrent builders never see a half-written file
        try:
            lib = ctypes.CDLL(str(out))
        except OSError as e:
            log.info("selective scan kernel %s does not load: %s", out, e)
            continue
        i32, i64, fp = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
        lib.mlma_scan_fwd.argtypes = [fp] * 8 + [i32, fp] + [i64] * 6
        lib.mlma_scan_fwd.restype = i32
        lib.mlma_scan_bwd.argtypes = [fp] * 8 + [i32] + [fp] * 9 + [i64] * 6
        lib.mlma_scan_bwd.restype = i32
        return lib
    return None


def _build() -> Optional[ctypes.CDLL]:
    global _built_with
    candidates = compiler_candidates()
    if not candidates:
        log.warning("selective scan: no C compiler found (install one, set CC, or `pip install ziglang`); "
                    "using the pure-PyTorch scan")
        return None
    for label, command in candidates:
        lib = build_with(command, label)
        if lib is not None:
            _built_with = label
            log.info("selective scan: using the compiled CPU kernel (built with %s)", label)
            return lib
    log.warning("selective scan: could not build the CPU kernel with %s; using the pure-PyTorch scan",
                " or ".join(label for label, _ in candidates))
    return None


def built_with() -> Optional[str]:
    """Which compiler built the loaded kernel (None when the kernel is not in use)."""
    return _built_with if load() is not None else None


def load() -> Optional[ctypes.CDLL]:
    """The compiled kernel library, or None (built at most once per process; thread-safe)."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("MLMA_SCAN_KERNEL", "1").lower() in ("0", "false", "no", "off"):
                log.info("selective scan: compiled CPU kernel disabled by MLMA_SCAN_KERNEL")
            else:
                try:
                    _lib = _build()
                except Exception as e:  # an accelerator must never break the model
                    log.warning("selective scan: CPU kernel unavailable (%s); using the pure-PyTorch scan", e)
                    _lib = None
            _tried = True
    return _lib


def _ranges(n: int, parts: int):
    parts = max(1, min(parts, n))
    step = -(-n // parts)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _run_parallel(fn, ranges):
    """Call fn(d0, d1) for each channel range on the pool; returns the results in order."""
    global _pool, _pool_key
    nthreads = len(ranges)
    if nthreads == 1:
        return [fn(*ranges[0])]
    with _lock:
        key = (nthreads - 1, os.getpid())
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key[1] == key[1]:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=nthreads - 1, thread_name_prefix="mlma-scan")
            _pool_key = key
        pool = _pool
    futures = [pool.submit(fn, d0, d1) for d0, d1 in ranges[1:]]
    first = fn(*ranges[0])  # the calling thread does a share too
    return [first] + [f.result() for f in futures]


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def scan_fwd(lib, u, delta, A, Bt, Ct, D, z, bias, softplus: bool) -> torch.Tensor:
    """Fused forward. u, delta, z (B, D, L); A (D, N); Bt, Ct (B, L, N); D, bias (D,) or None.

    All float32, contiguous, CPU. Returns y (B, D, L).
    """
    bsz, dim, length = u.shape
    n = A.shape[1]
    y = torch.empty_like(u)
    args = [_ptr(t) for t in (u, delta, A, Bt, Ct, D, z, bias)] + [int(softplus), _ptr(y), bsz, dim, length, n]
    status = _run_parallel(lambda d0, d1: lib.mlma_scan_fwd(*args, d0, d1), _ranges(dim, torch.get_num_threads()))
    if any(status):
        raise MemoryError("selective scan: could not allocate the per-thread work buffer")
    return y


def scan_bwd(lib, u, delta, A, Bt, Ct, D, z, bias, softplus: bool, dy) -> Tuple[Optional[torch.Tensor], ...]:
    """Gradients (du, ddelta, dA, dBt, dCt, dD, dz, dbias) of :func:`scan_fwd`; None for absent inputs."""
    bsz, dim, length = u.shape
    n = A.shape[1]
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dA = torch.zeros_like(A)
    dD = torch.empty_like(D) if D is not None else None
    dz = torch.empty_like(z) if z is not None else None
    dbias = torch.empty_like(bias) if bias is not None else None
    ranges = _ranges(dim, max(1, torch.get_num_threads()))
    # one private (dBt, dCt) accumulator per worker: B and C are shared by all channels
    acc = torch.zeros(len(ranges), 2, bsz, length, n)
    common = [_ptr(t) for t in (u, delta, A, Bt, Ct, D, z, bias)] + [int(softplus)]
    common += [_ptr(t) for t in (dy, du, ddelta, dA)]

    def work(i, d0, d1):
        return lib.mlma_scan_bwd(*common, _ptr(acc[i, 0]), _ptr(acc[i, 1]), _ptr(dD), _ptr(dz), _ptr(dbias),
                                 bsz, dim, length, n, d0, d1)

    slot = {r: i for i, r in enumerate(ranges)}
    if any(_run_parallel(lambda d0, d1: work(slot[(d0, d1)], d0, d1), ranges)):
        raise MemoryError("selective scan backward: could not allocate the per-thread work buffer")
    dBt, dCt = acc.sum(0).unbind(0) if len(ranges) > 1 else acc[0].unbind(0)
    return du, ddelta, dA, dBt, dCt, dD, dz, dbias
