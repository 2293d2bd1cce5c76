"""`mlma bench decode`: real-time factor of each decoding method on this CPU (random weights).

For each named model size: one forward pass over a batch of random 80-dim features (`seconds` of audio per
utterance, timed after a warm-up), then each search method on the resulting log-probs:
ctc-greedy-search, ctc-prefix-beam-search, and WFST (kaldi-decoder; k2 too when importable) on a graph
built from a random 1000-word lexicon and a trigram trained on random sentences.
RTF = (model time + search time) / audio seconds. Random weights give flat posteriors, which makes beam and
WFST search slower than with a trained model, so these RTFs are upper bounds for the search part.
"""
from __future__ import annotations

import logging
import random
import tempfile
import time
from pathlib import Path
from typing import List

import torch

from mlma_cli.decode.greedy import ctc_greedy
from mlma_cli.decode.k2_backend import K2Decoder, k2_available
from mlma_cli.decode.lm import write_arpa
from mlma_cli.decode.prefix_beam import ctc_prefix_beam_batch
from mlma_cli.decode.wfst import KaldiWfstDecoder, build_graph
from mlma_cli.model import build_model, named_config

log = logging.getLogger(__name__)


def _random_graph(vocab_size: int, num_words: int = 1000, seed: int = 0):
    rng = random.Random(seed)
    lex = {}
    while len(lex) < num_words:
        seq = tuple(rng.randint(1, vocab_size - 1) for _ in range(rng.randint(1, 4)))
        lex[f"w{len(lex)}"] = list(seq)
    words = list(lex)
    sents = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) for _ in range(5000)]
    with tempfile.TemporaryDirectory() as tmp:
        arpa = Path(tmp) / "lm.arpa"
        write_arpa(sents, arpa, order=3)
        return build_graph(arpa, lambda w: lex[w], vocab_size)


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_bench(sizes: List[str], seconds: float = 10.0, batch: int = 4, vocab_size: int = 500, beam: int = 4,
              device: str = "cpu") -> List[dict]:
    """Rows {size, params, method, rtf, rtf_model, rtf_search, ...} for every size x method (see module doc)."""
    torch.manual_seed(0)
    t0 = time.perf_counter()
    graph = _random_graph(vocab_size)
    log.info("bench graph: %d states (built in %.1f s)", graph.num_states, time.perf_counter() - t0)
    audio = seconds * batch
    rows = []
    for size in sizes:
        dev = torch.device(device)
        model = build_model(named_config(size, vocab_size=vocab_size)).eval().to(dev)
        T = int(seconds * 100)
        feats = torch.randn(batch, T, 80, device=dev)
        lens = torch.full((batch,), T, dtype=torch.int64, device=dev)

        def forward():
            out = model(feats, lens)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        with torch.inference_mode():
            model(feats[:1, :200], lens[:1].clamp(max=200))  # warm-up
            forward()
            t_model = _time(forward, repeat=2 if dev.type == "cuda" else 1)
            log_probs, out_lens = forward()
        log_probs, out_lens = log_probs.float().cpu(), out_lens.cpu()
        kaldi = KaldiWfstDecoder(graph, beam=16.0, max_active=7000)
        methods = {
            "ctc-greedy-search": lambda: ctc_greedy(log_probs, out_lens),
            f"ctc-prefix-beam-search-beam-{beam}": lambda: ctc_prefix_beam_batch(log_probs, out_lens, beam=beam),
            "wfst-kaldi": lambda: [kaldi.decode(log_probs[b, : int(out_lens[b])]) for b in range(batch)],
        }
        if k2_available():
            k2dec = K2Decoder(graph)
            methods["wfst-k2"] = lambda: k2dec.decode(log_probs, out_lens.tolist())
        n_params = sum(p.numel() for p in model.parameters())
        for name, fn in methods.items():
            t_search = _time(fn)
            rows.append({"size": size, "params": n_params, "method": name, "audio_seconds": audio,
                         "rtf": (t_model + t_search) / audio, "rtf_model": t_model / audio,
                         "rtf_search": t_search / audio, "threads": torch.get_num_threads(), "device": device})
            log.info("%s %s: RTF %.4f", size, name, rows[-1]["rtf"])
    return rows
