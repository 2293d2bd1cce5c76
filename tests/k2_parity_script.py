"""Run under .venv-k2 (Python 3.9, torch 1.13.1, k2): k2 and kaldi-decoder must find the same best path.

For several random lexicons / n-gram LMs (orders 1-3) and batches of random CTC log-probs of varied lengths,
decodes with both backends on the same HLG (standard and compact CTC topologies in turn) and compares words,
token sequences and total scores.
Prints one JSON line {"cases": n, "mismatches": [...]} and exits 1 on any mismatch.
"""
from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mlma_cli.decode.k2_backend import K2Decoder  # noqa: E402
from mlma_cli.decode.lm import write_arpa  # noqa: E402
from mlma_cli.decode.wfst import KaldiWfstDecoder, build_graph  # noqa: E402


def main() -> int:
    cases, nonempty, mismatches = 0, 0, []
    tmp = Path(tempfile.mkdtemp())
    for seed in range(6):
        rng = random.Random(seed)
        V = rng.randint(5, 9)
        words = sorted({"".join(chr(96 + rng.randint(1, V - 1)) for _ in range(rng.randint(1, 3))) for _ in range(12)})
        sents = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(80)]
        arpa = tmp / f"lm{seed}.arpa"
        write_arpa(sents, arpa, order=1 + seed % 3)
        graph = build_graph(arpa, lambda w: [ord(c) - 96 for c in w], V, topo=("standard", "compact")[seed % 2])
        lm_scale = [1.0, 0.5, 2.0][seed % 3]
        kaldi = KaldiWfstDecoder(graph, beam=1000.0, max_active=10 ** 6, lm_scale=lm_scale)
        decoders = {
            "pruned": K2Decoder(graph, search_beam=1000.0, output_beam=1000.0, max_active_states=10 ** 6,
                                lm_scale=lm_scale),
            "exact": K2Decoder(graph, exact=True, output_beam=1000.0, lm_scale=lm_scale),
        }
        g = torch.Generator().manual_seed(seed)
        B, T = 5, 30
        lp = (torch.randn(B, T, V, generator=g) * 2.5).log_softmax(-1)
        lens = [T] + [rng.randint(1, T) for _ in range(B - 1)]
        for name, dec in decoders.items():
            res = dec.decode(lp, lens)
            for b in range(B):
                ref = kaldi.decode(lp[b, : lens[b]].numpy())
                cases += 1
                nonempty += bool(ref.words)
                same = (res[b].words == ref.words and res[b].tokens == ref.tokens
                        and abs(res[b].score + ref.cost) <= 1e-3 * max(1.0, abs(ref.cost)))
                if not same:
                    mismatches.append({"seed": seed, "decoder": name, "utt": b, "k2": [res[b].words, res[b].tokens, res[b].score],
                                       "kaldi": [ref.words, ref.tokens, -ref.cost]})
    print(json.dumps({"cases": cases, "nonempty": nonempty, "mismatches": mismatches}))
    return 1 if mismatches or nonempty < cases // 2 else 0


if __name__ == "__main__":
    sys.exit(main())
