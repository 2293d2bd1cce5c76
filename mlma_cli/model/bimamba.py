"""Bidirectional Mamba-1 mixer ("BiMamba v2"), length-aware.

Parameter names follow mamba-ssm's ``Mamba`` (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj) and, for the
backward direction, the BiMamba-v2 forks used by ConMamba (conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b), so one
state dict runs on our PyTorch scan and on mamba-ssm's CUDA kernel.

Ways through the bidirectional mixer, numerically equal (tests/test_bimamba.py, tests/test_biscan.py, test_export):
on CPU with the compiled kernel, time-major C kernels for both directions' conv and scan (``_bidirectional_time_major``;
with hand-written backward passes for training, on cached prepared weights when no gradient is wanted); on CUDA or
without a compiler, the by-parts path (``_bidirectional``: two per-direction scans with gathered reversals); in the
ONNX export, ``_bidirectional`` with both directions in one Scan loop (``export_scan.bidirectional_scan_onnx``).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlma_cli.model import backends, scan_cpu_kernel
from mlma_cli.model.backends import selective_scan_for
from mlma_cli.model.biscan import biconv_time_major, bidirectional_scan_by_parts, biscan_time_major
from mlma_cli.model.mamba1 import direction_params, mamba1_direction
from mlma_cli.model.masking import zero_padding
from mlma_cli.model.scan import selective_scan


class BiMamba(nn.Module):
    """Mamba-1 mixer; bidirectional by default.

    Args:
        d_model: input/output width D.
        d_state: SSM state size N (16).
        d_conv: causal conv kernel (4).
        expand: d_inner = expand * d_model.
        dt_rank: rank of the delta projection (ceil(D / 16)).
        dt_min, dt_max, dt_init_floor: delta initialisation.
        bidirectional: add the length-aware backward direction and average the two.
        scan_backend: "auto" | "torch" | "cuda" (see backends.py).

    forward(x (B, T, D), lengths (B,) or None) -> (B, T, D). Frames past a sequence's length are ignored: they
    never reach valid frames, and their own output is unspecified.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int = 16,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4,
                 bidirectional: bool = True, scan_backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.bidirectional = bidirectional
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        args = (self.d_inner, d_state, d_conv, dt_rank, dt_min, dt_max, dt_init_floor)
        for name, p in direction_params(*args).items():
            setattr(self, name, p)
        if bidirectional:
            back = direction_params(*args)
            self.conv1d_b, self.x_proj_b, self.dt_proj_b = back["conv1d"], back["x_proj"], back["dt_proj"]
            self.A_b_log, self.D_b = back["A_log"], back["D"]
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        length = x.shape[1]
        xz = self.in_proj(x)                                            # (B, L, 2*d_inner)
        if self.bidirectional and self._kernels_apply(xz):
            return self.out_proj(self._bidirectional_time_major(xz, lengths).to(xz.dtype))
        if lengths is not None and not torch.compiler.is_exporting() and bool((lengths >= length).all()):
            lengths = None                                              # unpadded batch: no masking work
        mask = None if lengths is None else torch.arange(length, device=x.device)[None, :] < lengths[:, None]
        scan = selective_scan_for(xz, self.scan_backend)
        if not self.bidirectional:
            xs, z = xz.transpose(1, 2).chunk(2, dim=1)
            y = mamba1_direction(xs, z, mask, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D,
                                 self.d_state, scan)
            return self.out_proj(y.transpose(1, 2))
        return self.out_proj(self._bidirectional(xz, lengths, mask, scan))

    def _kernels_apply(self, xz: torch.Tensor) -> bool:
        """True where :meth:`_bidirectional_time_major` runs: on CPU with the compiled kernel and our own scan chosen,
        not inside torch.export / torch.compile."""
        if xz.device.type != "cpu" or self.d_state > scan_cpu_kernel.MAX_STATE:
            return False
        if torch.compiler.is_exporting() or torch.compiler.is_compiling():
            return False
        return selective_scan_for(xz, self.scan_backend) is selective_scan and scan_cpu_kernel.load() is not None

    def _bidirectional_time_major(self, xz: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """Both directions on CPU, time-major throughout: xz (B, L, 2E) -> gated average (B, L, E), float32.

        Both directions' conv + SiLU is one C kernel reading the x half of xz in place (the backward direction's
        conv is the anti-causal one within each length: no reversed copies, no masking pass), x_proj and dt_proj are
        one batched matmul each on the (2, B*L, .) rows, and the scan kernel reads B and C out of x_proj's output and
        the gate out of xz, vectorised across channels (biscan.biconv_time_major / biscan_time_major, with
        hand-written backward passes). Without autograd the weights come prepared from :meth:`_inference_weights`.
        """
        bsz, length, _ = xz.shape
        e, r = self.d_inner, self.dt_proj.in_features
        xz = xz.float()
        if xz.stride(-1) != 1:
            xz = xz.contiguous()
        grad = torch.is_grad_enabled() and (xz.requires_grad or any(p.requires_grad for p in self._step_params()))
        w = self._step_weights() if grad else self._inference_weights()
        lens = None if lengths is None else lengths.to(device="cpu", dtype=torch.int64).clamp(max=length).contiguous()
        u = biconv_time_major(xz[..., :e], w["conv"], w["conv_bias"], lens)                 # (2, B, L, E)
        x_dbl = torch.bmm(u.view(2, bsz * length, e), w["x_proj"]).float()                   # (2, B*L, R+2N)
        delta = torch.bmm(x_dbl[..., :r], w["dt_proj"]).float().view(2, bsz, length, e)
        return biscan_time_major(u, delta, w["A_t"], x_dbl.view(2, bsz, length, -1)[..., r:], w["D"], xz[..., e:],
                                 w["dt_bias"], lens, delta_softplus=True)

    def _step_params(self) -> list:
        """The parameters :meth:`_step_weights` reads (looked up in the module dicts directly: nn.Module's
        __getattr__ would cost more than the rest of a short utterance's cache check)."""
        mods, own = self._modules, self._parameters
        sub = lambda name, p: mods[name]._parameters[p]  # noqa: E731
        return [sub("conv1d", "weight"), sub("conv1d_b", "weight"), sub("conv1d", "bias"), sub("conv1d_b", "bias"),
                sub("x_proj", "weight"), sub("x_proj_b", "weight"), sub("dt_proj", "weight"), sub("dt_proj_b", "weight"),
                sub("dt_proj", "bias"), sub("dt_proj_b", "bias"), own["A_log"], own["A_b_log"], own["D"], own["D_b"]]

    def _step_weights(self) -> dict:
        """Both directions' step weights in the layouts of :meth:`_bidirectional_time_major`, float32, differentiable:
        conv taps (2, K, E) and bias (2, E), x_proj (2, E, R+2N) and dt_proj (2, R, E) transposed, A (2, N, E)
        transposed, D and dt bias (2, E)."""
        pair = lambda a, b: torch.stack([a, b]).float()  # noqa: E731
        return {
            "conv": pair(self.conv1d.weight[:, 0], self.conv1d_b.weight[:, 0]).transpose(1, 2),
            "conv_bias": pair(self.conv1d.bias, self.conv1d_b.bias),
            "x_proj": pair(self.x_proj.weight, self.x_proj_b.weight).transpose(1, 2),
            "dt_proj": pair(self.dt_proj.weight, self.dt_proj_b.weight).transpose(1, 2),
            "A_t": (-torch.exp(pair(self.A_log, self.A_b_log))).transpose(1, 2),
            "D": pair(self.D, self.D_b),
            "dt_bias": pair(self.dt_proj.bias, self.dt_proj_b.bias),
        }

    def _inference_weights(self) -> dict:
        """:meth:`_step_weights` without autograd, contiguous, built once and reused until a parameter changes (its
        storage or its version counter, which every in-place update such as an optimizer step or load_state_dict
        bumps); the cache holds the parameters' storage, so an address is never reused while it is compared.
        Parameters made under inference_mode have no version counter: then nothing is cached."""
        params = self._step_params()
        if any(p.is_inference() for p in params):  # made under inference_mode: no version counter to watch
            with torch.no_grad():
                return self._prepared_weights()
        key = [(p.data_ptr(), p._version) for p in params]
        cached = self.__dict__.get("_inference_cache")
        if cached is not None and cached[0] == key:
            return cached[2]
        with torch.inference_mode(False), torch.no_grad():
            weights = self._prepared_weights()
        self.__dict__["_inference_cache"] = (key, [p.detach() for p in params], weights)
        return weights

    def _prepared_weights(self) -> dict:
        """:meth:`_step_weights` with the transposed conv taps and A made contiguous for the kernels."""
        return {k: v.contiguous() if k in ("conv", "A_t") else v for k, v in self._step_weights().items()}

    def _bidirectional(self, xz: torch.Tensor, lengths: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                       scan) -> torch.Tensor:
        """Both directions by parts (CUDA, no C compiler, ONNX export): xz (B, L, 2*d_inner) -> (B, L, d_inner).

        The backward direction's causal conv over the reversed sequence is an anti-causal conv over the original
        one, so one depthwise conv with 2K-1 taps serves both (each direction's taps on its own side, zeros on the
        other), x_proj and dt_proj of both directions are one batched matmul each; then two calls of the
        per-direction scan with gathered reversals (biscan.bidirectional_scan_by_parts).
        """
        bsz, length, _ = xz.shape
        e, n, k = self.d_inner, self.d_state, self.conv1d.kernel_size[0]
        xs = zero_padding(xz[..., :e], mask, time_dim=1)               # padding never enters the conv
        u = F.conv1d(xs.transpose(1, 2).repeat(1, 2, 1), self._conv_weight(), self._stack("conv1d", "bias").flatten(),
                     padding=k - 1, groups=2 * e)                       # (B, 2E, L): forward then backward
        u = F.silu(u).view(bsz, 2, e, length)
        x_dbl = torch.matmul(u.transpose(2, 3), self._stack("x_proj", "weight").transpose(1, 2))  # (B, 2, L, R+2N)
        dt, Bt, Ct = torch.split(x_dbl, [self.dt_proj.in_features, n, n], dim=-1)
        delta = torch.matmul(self._stack("dt_proj", "weight"), dt.transpose(2, 3))                # (B, 2, E, L)
        A = -torch.exp(torch.stack([self.A_log, self.A_b_log]).float())
        both = backends.FORCED.get("bidirectional scan")   # the ONNX export's one-loop scan of both directions
        fn = both if both is not None else functools.partial(bidirectional_scan_by_parts, scan=scan)
        return fn(u, delta, A, Bt, Ct, torch.stack([self.D, self.D_b]).float(), z=xz[..., e:],
                  delta_bias=self._stack("dt_proj", "bias").float(), lengths=lengths, delta_softplus=True)

    def _stack(self, module: str, param: str) -> torch.Tensor:
        """A parameter of both directions' modules (conv1d / conv1d_b, ...), stacked: (2, ...)."""
        return torch.stack([getattr(getattr(self, module), param), getattr(getattr(self, module + "_b"), param)])

    def _conv_weight(self) -> torch.Tensor:
        """(2E, 1, 2K-1): the forward conv's K taps on the past side, the backward conv's (reversed) on the future
        side; with padding K-1 this is the causal conv and the reversed-sequence causal conv in one."""
        k = self.conv1d.kernel_size[0]
        return torch.cat([F.pad(self.conv1d.weight, (0, k - 1)), F.pad(self.conv1d_b.weight.flip(-1), (k - 1, 0))])
