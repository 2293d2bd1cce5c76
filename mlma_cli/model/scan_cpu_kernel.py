"""Optional compiled CPU kernel for the whole Mamba-1 selective scan (forward and backward).

A small C file, ``scan_cpu_kernel.c`` next to this module (no torch headers, so it compiles in about a
second), is built on first use, cached,
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

The bidirectional mixer has its own time-major kernels (:func:`biconv_tm`, :func:`biscan_tm_fwd` and their
backward passes), vectorised across blocks of 16 channels instead of along one row. Their parallel part runs on
torch's own OpenMP threads (GOMP_parallel of the libgomp torch loaded, found with RTLD_NOLOAD) where there is one, so no
second pool of threads competes with torch's spinning OpenMP workers for the cores; else on the Python pool.
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

# The C source ships as package data next to this module (pyproject [tool.setuptools.package-data]).
_C_PATH = Path(__file__).with_name("scan_cpu_kernel.c")


def _c_source() -> str:
    return _C_PATH.read_text()

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
    source = _c_source()
    env = dict(os.environ)
    # zig keeps its own build cache under $HOME, which may be read-only; ours is known to be writable
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(_cache_dir() / "zig"))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(_cache_dir() / "zig"))
    for arch in (["-march=native"], []):
        flags = _FLAGS + arch
        key = hashlib.sha256("\0".join([source, *command, *flags, platform.machine(), _cpu_key()]).encode())
        out = _cache_dir() / f"mlma_scan_{key.hexdigest()[:16]}.so"
        if not out.exists():
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                src = Path(tmp) / "mlma_scan.c"  # the text that was hashed, even if the file changes meanwhile
                src.write_text(source)
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
        lib.mlma_run.argtypes = [fp, fp, i64, i64, fp, fp, fp]
        lib.mlma_run.restype = i32
        for name in ("mlma_biconv_tm", "mlma_biscan_tm_fwd", "mlma_biconv_tm_bwd", "mlma_biscan_tm_bwd"):
            getattr(lib, name).argtypes = [fp, i64, i64, i64]
            getattr(lib, name).restype = i32
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


def _parallel_with_accumulators(call, ranges, acc: torch.Tensor, what: str):
    """Run ``call(acc[i], d0, d1)`` for each channel range i in parallel, every worker writing only its own
    (dBt, dCt) slot ``acc[i]`` (B and C are shared by all channels); returns the slots' sum as (dBt, dCt)."""
    slot = {r: i for i, r in enumerate(ranges)}
    if any(_run_parallel(lambda d0, d1: call(acc[slot[(d0, d1)]], d0, d1), ranges)):
        raise MemoryError(f"{what}: could not allocate the per-thread work buffer")
    return acc.sum(0).unbind(0) if len(ranges) > 1 else acc[0].unbind(0)


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

    dBt, dCt = _parallel_with_accumulators(
        lambda a, d0, d1: lib.mlma_scan_bwd(*common, _ptr(a[0]), _ptr(a[1]), _ptr(dD), _ptr(dz), _ptr(dbias),
                                            bsz, dim, length, n, d0, d1),
        ranges, acc, "selective scan backward")
    return du, ddelta, dA, dBt, dCt, dD, dz, dbias


# ---- the bidirectional mixer's time-major kernels (see the last sections of the C file) -----------------------------------------

_BW = 16  # channels per work unit, as BW in the C file

_i64 = ctypes.c_int64


class _BiconvArgs(ctypes.Structure):
    _fields_ = [(k, ctypes.c_void_p) for k in ("x", "w", "bias", "lengths", "u")] + \
        [(k, _i64) for k in ("xb", "xt", "Bsz", "E", "L", "K")]


class _BiscanArgs(ctypes.Structure):
    _fields_ = [(k, ctypes.c_void_p) for k in ("u", "delta", "At", "bc", "D", "bias", "z", "lengths", "y")] + \
        [(k, _i64) for k in ("bcs", "zb", "zt", "Bsz", "E", "L", "N")] + [("softplus", ctypes.c_int)]


class _BiconvTmBwdArgs(ctypes.Structure):
    _fields_ = [("f", _BiconvArgs)] + [(k, ctypes.c_void_p) for k in ("du", "dx", "acc")] + \
        [(k, _i64) for k in ("dxb", "dxt", "acc_stride")]


class _BiscanTmBwdArgs(ctypes.Structure):
    _fields_ = [("f", _BiscanArgs)] + [(k, ctypes.c_void_p) for k in ("dy", "du", "ddelta", "dz", "acc")] + \
        [("acc_stride", _i64)]


_omp: Optional[Tuple[int, int, int]] = None
_omp_tried = False
USE_OMP = True  # run the kernels' parallel parts on torch's OpenMP threads when its libgomp is found


def _omp_entries() -> Optional[Tuple[int, int, int]]:
    """Addresses of GOMP_parallel, omp_get_thread_num, omp_get_num_threads in the libgomp torch already loaded.

    Work handed to these runs on torch's own intra-op threads: a second pool would compete for the cores with the
    OpenMP workers that spin for a while after each torch op. None where torch has no libgomp (the Python pool is
    used then)."""
    global _omp, _omp_tried
    if not _omp_tried:
        try:
            gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # only an already loaded one
            _omp = tuple(ctypes.cast(getattr(gomp, name), ctypes.c_void_p).value
                         for name in ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads"))
        except (OSError, AttributeError):
            _omp = None
        _omp_tried = True
    return _omp


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _run_units(lib, name: str, args: ctypes.Structure, units: int) -> None:
    """Call the C range function ``name`` over work units [0, units), spread over :func:`_threads` threads; the
    thread doing a range passes its slot (< _threads()) for private accumulators."""
    if torch.autograd._profiler_enabled():   # name the call in torch.profiler's tables (it is no aten op)
        with torch.profiler.record_function(name):
            return _run_units_now(lib, name, args, units)
    return _run_units_now(lib, name, args, units)


def _run_units_now(lib, name: str, args: ctypes.Structure, units: int) -> None:
    threads = _threads()
    fn = getattr(lib, name)
    omp = _omp_entries() if USE_OMP and threads > 1 else None
    if omp is not None:
        status = [lib.mlma_run(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(args), units, threads, *omp)]
    else:
        ranges = _ranges(units, threads)
        slot = {r: i for i, r in enumerate(ranges)}
        status = _run_parallel(lambda u0, u1: fn(ctypes.byref(args), u0, u1, slot[(u0, u1)]), ranges)
    if any(status):
        raise MemoryError(f"{name}: could not allocate its work buffer")


def _units(bsz: int, dim: int) -> int:
    return bsz * -(-dim // _BW)


def _biconv_args(x, w, bias, lengths, u) -> _BiconvArgs:
    bsz, length, dim = x.shape
    return _BiconvArgs(x.data_ptr(), w.data_ptr(), bias.data_ptr(), _ptr(lengths), _ptr(u), x.stride(0), x.stride(1),
                       bsz, dim, length, w.shape[1])


def biconv_tm(lib, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor,
              lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Both directions' depthwise conv + SiLU of a bidirectional mixer, time-major.

    x (B, L, E) float32 with channel stride 1 (e.g. the first half of in_proj's output); w (2, K, E), bias (2, E)
    contiguous; lengths (B,) int64 contiguous or None. Returns u (2, B, L, E): direction 0 the causal conv,
    direction 1 the causal conv of each sequence reversed within its length, in original time order.
    """
    bsz, length, dim = x.shape
    u = x.new_empty(2, bsz, length, dim)
    _run_units(lib, "mlma_biconv_tm", _biconv_args(x, w, bias, lengths, u), _units(bsz, dim))
    return u


def biconv_tm_bwd(lib, x, w, bias, lengths, du) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx (B, L, E) contiguous, dw (2, K, E), dbias (2, E)) of :func:`biconv_tm` given du (2, B, L, E)
    contiguous."""
    bsz, length, dim = x.shape
    k = w.shape[1]
    dx = x.new_empty(bsz, length, dim)
    per = 2 * k * dim + 2 * dim
    acc = x.new_zeros(_threads(), per)
    args = _BiconvTmBwdArgs(_biconv_args(x, w, bias, lengths, None), du.data_ptr(), dx.data_ptr(), acc.data_ptr(),
                            dx.stride(0), dx.stride(1), per)
    _run_units(lib, "mlma_biconv_tm_bwd", args, _units(bsz, dim))
    total = acc.sum(0)
    return dx, total[:2 * k * dim].view(2, k, dim), total[2 * k * dim:].view(2, dim)


def _biscan_args(u, delta, At, bc, D, bias, z, lengths, softplus, y) -> _BiscanArgs:
    _, bsz, length, dim = u.shape
    rows = bc.stride(2)
    if bc.stride() != (bsz * length * rows, length * rows, rows, 1):
        raise ValueError("time-major scan: bc must be a column slice of a contiguous (2, B, L, S) tensor")
    zb, zt = (z.stride(0), z.stride(1)) if z is not None else (0, 0)
    return _BiscanArgs(u.data_ptr(), delta.data_ptr(), At.data_ptr(), bc.data_ptr(), _ptr(D), _ptr(bias), _ptr(z),
                       _ptr(lengths), _ptr(y), rows, zb, zt, bsz, dim, length, At.shape[1], int(softplus))


def biscan_tm_fwd(lib, u, delta, At, bc, D, bias, z, lengths, softplus: bool) -> torch.Tensor:
    """Both directions' scans of a bidirectional mixer, time-major, averaged and gated (``mlma_biscan_tm_fwd``).

    u, delta (2, B, L, E) contiguous; At (2, N, E) contiguous; bc (2, B, L, S): rows whose first N entries are B_t
    and next N C_t, channel stride 1 (x_proj's output past the dt columns); D, bias (2, E) or None; z (B, L, E) with
    channel stride 1, or None; lengths (B,) int64 or None. All float32. Returns y (B, L, E).
    """
    _, bsz, length, dim = u.shape
    y = u.new_empty(bsz, length, dim)
    _run_units(lib, "mlma_biscan_tm_fwd", _biscan_args(u, delta, At, bc, D, bias, z, lengths, softplus, y),
               _units(bsz, dim))
    return y


def biscan_tm_bwd(lib, u, delta, At, bc, D, bias, z, lengths, softplus: bool, dy) -> Tuple[Optional[torch.Tensor], ...]:
    """Gradients (du, ddelta, dAt, dbc, dD, dbias, dz) of :func:`biscan_tm_fwd` given dy (B, L, E) contiguous; dbc is
    (2, B, L, 2N) (B then C columns), dz (B, L, E) contiguous; None for absent inputs."""
    _, bsz, length, dim = u.shape
    n = At.shape[1]
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dz = u.new_empty(bsz, length, dim) if z is not None else None
    sizes = [2 * n * dim, 2 * dim, 2 * dim, 2 * bsz * length * 2 * n]
    acc = u.new_zeros(_threads(), sum(sizes))
    args = _BiscanTmBwdArgs(_biscan_args(u, delta, At, bc, D, bias, z, lengths, softplus, None), dy.data_ptr(),
                            du.data_ptr(), ddelta.data_ptr(), _ptr(dz), acc.data_ptr(), sum(sizes))
    _run_units(lib, "mlma_biscan_tm_bwd", args, _units(bsz, dim))
    dAt, dD, dbias, dbc = acc.sum(0).split(sizes)
    return (du, ddelta, dAt.view(2, n, dim), dbc.view(2, bsz, length, 2 * n), dD.view(2, dim) if D is not None else None,
            dbias.view(2, dim) if bias is not None else None, dz)
