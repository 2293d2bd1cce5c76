"""Why the pure-PyTorch scan keeps one fused multiply-add per time step: the loop-free alternative, measured.

The closed form per chunk of T steps needs no operation per step:
    S_t = cumsum(delta_k A) over the chunk,  h_t = exp(S_t) * (h_0 + cumsum(exp(-S_k) delta_k u_k B_k))
but exp(-S_k) grows as exp(T * |delta A|), so float32 overflows for long chunks, and every step costs several
full passes over (T, B, D, N) buffers. This script times it against mlma's chunked torch forward and the plain
loop in one process, at the scan benchmark's shape, and checks its error against the plain loop:

    .venv/bin/python benchmarks/scan_closed_form.py [--threads 2] [--chunks 8,16,32]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mlma_cli.model import scan as scan_mod


def closed_form_forward(u, delta, A, B, C, chunk):
    """Forward scan without a per-step operation. u, delta (B, D, L); A (D, N); B, C (B, N, L) -> y (B, D, L)."""
    bsz, dim, length = u.shape
    tm = lambda t: t.permute(2, 0, 1).contiguous()  # noqa: E731  time-major, as in mlma's torch path
    dl, dul, Bl, Cl = tm(delta), tm(delta * u), tm(B), tm(C)
    y = u.new_empty(length, bsz, dim)
    h = u.new_zeros(bsz, dim, A.shape[1])
    for s in range(0, length, chunk):
        e = min(s + chunk, length)
        S = torch.cumsum(dl[s:e, :, :, None] * A, 0)  # (T, B, D, N), <= 0
        w = torch.exp(-S).mul_(dul[s:e, :, :, None] * Bl[s:e, :, None, :])
        hs = torch.cumsum(w, 0).add_(h).mul_(S.exp_())
        h = hs[-1].clone()
        y[s:e] = torch.matmul(hs, Cl[s:e, :, :, None]).squeeze(-1)
    return y.permute(1, 2, 0)


def _best_ms(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", default="8,16,32")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    bsz, dim, n, length = 8, 512, 16, 500
    u = torch.randn(bsz, dim, length, generator=g)
    delta = F.softplus(torch.randn(bsz, dim, length, generator=g) * 0.5 - 2.0)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(dim, 1)  # ConMamba's S4D-real init
    B, C = torch.randn(bsz, n, length, generator=g), torch.randn(bsz, n, length, generator=g)
    with torch.no_grad():
        ref = scan_mod.selective_scan_sequential(u, delta, A, B, C)
        plain = _best_ms(lambda: scan_mod.selective_scan_sequential(u, delta, A, B, C), args.repeats)
        chunked = _best_ms(lambda: scan_mod._torch_forward(u, delta, A, B, C, scan_mod.TORCH_CHUNK, False),
                           args.repeats)
        print(f"B={bsz} D={dim} N={n} L={length}, forward, float32, {args.threads} threads (min of {args.repeats})")
        print(f"{'plain loop':34s} {plain:8.1f} ms")
        print(f"{'mlma torch path (chunk 16)':34s} {chunked:8.1f} ms   {plain / chunked:5.2f}x plain")
        for chunk in (int(c) for c in args.chunks.split(",")):
            y = closed_form_forward(u, delta, A, B, C, chunk)
            err = (y - ref).abs().max().item()
            ms = _best_ms(lambda: closed_form_forward(u, delta, A, B, C, chunk), args.repeats)
            print(f"{f'closed form, chunk {chunk}':34s} {ms:8.1f} ms   {plain / ms:5.2f}x plain   "
                  f"{chunked / ms:5.2f}x mlma torch   max error {err:.2g}")


if __name__ == "__main__":
    main()
