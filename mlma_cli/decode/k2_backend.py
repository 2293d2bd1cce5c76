"""k2 backend: the same HLG as `wfst.py`, decoded in batches with k2 (CPU or GPU).

The kaldifst graph (input label = token id + 1, 0 = epsilon) is read into k2 with `Fsa.from_openfst`,
its input epsilons removed (`k2.remove_epsilon`, tropical semiring, word labels become ragged), and the
labels shifted down by one so that label = token id (blank 0) indexes the columns of the log-probs.
Decoding: `intersect_dense_pruned` (or exact `intersect_dense`) with a DenseFsaVec of log_probs / lm_scale,
then `shortest_path`: the same objective as the kaldi-decoder backend (total = LM + acoustic / lm_scale).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

from mlma_cli.errors import MissingDependencyError

log = logging.getLogger(__name__)

K2_HINT = (
    "the k2 backend needs k2, which is not importable here. On CPU run `tools/setup_env.sh --k2` (makes .venv-k2: "
    "Python 3.9, torch 1.13.1, k2 1.23.4) and decode with .venv-k2/bin/mlma; on GPU install the k2 wheel matching "
    "your torch and CUDA from k2-fsa's wheel index (https://k2-fsa.github.io/k2/installation/). "
    "Or use --backend kaldi"
)


def require_k2():
    """Import k2 or raise MissingDependencyError with the install hint."""
    try:
        import k2  # noqa: F401
    except Exception as err:  # ImportError, or a broken wheel failing at import (OSError / RuntimeError)
        raise MissingDependencyError(f"{K2_HINT} (import error: {err})") from err
    return k2


def k2_available() -> bool:
    try:
        require_k2()
        return True
    except MissingDependencyError:
        return False


@dataclass
class K2Result:
    word_ids: List[int]
    words: List[str]
    score: float  # total log score (higher is better) = -(kaldi cost)
    tokens: List[int] = None  # best path's token ids (repeats collapsed, blanks dropped)


class K2Decoder:
    """Batched k2 decoding over a `wfst.Graph` (HLG)."""

    def __init__(
        self,
        graph,
        device: str = "cpu",
        search_beam: float = 20.0,
        output_beam: float = 8.0,
        min_active_states: int = 30,
        max_active_states: int = 10000,
        lm_scale: float = 1.0,
        exact: bool = False,
    ):
        k2 = require_k2()
        import torch

        if lm_scale <= 0:
            raise ValueError(f"lm_scale must be > 0, got {lm_scale}")
        self.k2, self.torch = k2, torch
        self.graph = graph
        self.device = torch.device(device)
        self.search_beam, self.output_beam = search_beam, output_beam
        self.min_active, self.max_active = min_active_states, max_active_states
        self.lm_scale, self.exact = lm_scale, exact
        self.fsa = self._convert(graph.fst.to_str(show_weight_one=True)).to(self.device)

    def _convert(self, openfst_text: str):
        k2, torch = self.k2, self.torch
        fsa = k2.Fsa.from_openfst(openfst_text, acceptor=False)
        fsa = k2.arc_sort(fsa)
        fsa = k2.connect(k2.remove_epsilon(fsa))
        labels = fsa.labels.clone()
        fsa.labels = torch.where(labels > 0, labels - 1, labels)  # token id + 1 -> token id; -1 stays final
        return k2.arc_sort(fsa)

    def decode(self, log_probs, lens: Sequence[int]) -> List[K2Result]:
        """log_probs: (B, T, V) tensor; lens: (B,) valid frames. Returns B results in input order."""
        k2, torch = self.k2, self.torch
        lp = torch.as_tensor(log_probs).to(self.device, torch.float32) / self.lm_scale
        if lp.dim() != 3 or lp.shape[-1] != self.graph.vocab_size:
            from mlma_cli.errors import MlmaError

            raise MlmaError(
                f"log-probs of shape {tuple(lp.shape)} do not fit a graph built for vocab size "
                f"{self.graph.vocab_size}; rebuild the graph with this model's tokenizer (`mlma lm graph`)"
            )
        B = lp.shape[0]
        lens_t = torch.as_tensor([int(x) for x in lens], dtype=torch.int32)
        order = torch.argsort(lens_t, descending=True)
        segs = torch.stack([order.to(torch.int32), torch.zeros(B, dtype=torch.int32), lens_t[order]], dim=1)
        keep = segs[:, 2] > 0
        results: List[Optional[K2Result]] = [K2Result([], [], 0.0, []) for _ in range(B)]
        if not bool(keep.any()):
            return results
        segs = segs[keep]
        dense = k2.DenseFsaVec(lp, segs)
        if self.exact:
            graphs = k2.create_fsa_vec([self.fsa] * int(segs.shape[0]))  # one copy per sequence
            lattice = k2.intersect_dense(graphs, dense, output_beam=self.output_beam)
        else:
            lattice = k2.intersect_dense_pruned(
                self.fsa, dense, search_beam=self.search_beam, output_beam=self.output_beam,
                min_active_states=self.min_active, max_active_states=self.max_active,
            )
        best = k2.shortest_path(lattice, use_double_scores=True)
        scores = best.get_tot_scores(use_double_scores=True, log_semiring=False).cpu().tolist()
        for j, utt in enumerate(segs[:, 0].tolist()):
            path = best[j]
            aux = path.aux_labels
            values = aux.values if hasattr(aux, "values") else aux
            ids = [int(x) for x in values.cpu().tolist() if x > 0]
            words = [self.graph.id2word.get(i, f"<{i}>") for i in ids]
            tokens, prev = [], None
            for lab in path.labels.cpu().tolist():  # one label per frame, then -1
                if lab != prev and lab > 0:
                    tokens.append(int(lab))
                prev = lab
            results[utt] = K2Result(ids, words, float(scores[j]), tokens)
        return results
