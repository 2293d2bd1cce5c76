"""End to end on a miniature data dir: mlma decode (greedy, prefix beam, wfst), lm train/graph, score, report."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mlma_cli.errors import MlmaError

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng makes the test audio")

TEXTS = {
    "en": ["The cat sat on the mat.", "Good morning, John!", "Where is the station?"],
    "de": ["Guten Morgen, zusammen!", "Der Hund schläft im Garten.", "Wo ist der Bahnhof?"],
}


def make_data_dir(root: Path) -> Path:
    """DATA/manifests + DATA/fbank for synthetic/{en,de}/test (3 espeak utterances each, features stored)."""
    from lhotse import CutSet, LilcomChunkyWriter, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from mlma_cli.data.features import fbank_extractor
    from mlma_cli.data.layout import fbank_dir, manifest_dir

    data = root / "data"
    for lang, texts in TEXTS.items():
        adir = data / "audio" / "synthetic" / lang / "test"
        adir.mkdir(parents=True)
        recs, sups = [], []
        for i, text in enumerate(texts):
            wav = adir / f"{lang}-{i}.wav"
            subprocess.run(["espeak-ng", "-v", lang, "-w", str(wav), text], check=True, capture_output=True)
            rec = Recording.from_file(wav, recording_id=f"{lang}-{i}")
            recs.append(rec)
            sups.append(SupervisionSegment(id=rec.id, recording_id=rec.id, start=0, duration=rec.duration,
                                           text=text, language=lang))
        mdir = manifest_dir(data, "synthetic", lang, "test")
        mdir.mkdir(parents=True)
        RecordingSet.from_recordings(recs).to_file(mdir / "recordings.jsonl.gz")
        SupervisionSet.from_segments(sups).to_file(mdir / "supervisions.jsonl.gz")
        cuts = CutSet.from_manifests(RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups))
        cuts = cuts.resample(16000)
        cuts.to_file(mdir / "cuts.jsonl.gz")
        fdir = fbank_dir(data, "synthetic", lang, "test")
        fdir.mkdir(parents=True)
        cuts = cuts.compute_and_store_features(fbank_extractor(), fdir / "feats", storage_type=LilcomChunkyWriter,
                                               num_jobs=1, progress_bar=False)
        cuts.to_file(fdir / "cuts.jsonl.gz")
    return data


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from test_transcribe import make_checkpoint

    root = tmp_path_factory.mktemp("dec")
    return SimpleNamespace(root=root, data=make_data_dir(root), ckpt=make_checkpoint(root / "tiny.pt"))


def _invoke(args):
    from typer.testing import CliRunner

    from mlma_cli.cli.main import app

    res = CliRunner().invoke(app, args)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return res


def test_decode_score_report_end_to_end(env):
    out = env.root / "exp" / "decode"
    common = ["--checkpoint", str(env.ckpt), "--data-dir", str(env.data), "--output-dir", str(out)]
    _invoke(["decode", *common, "--test-sets", "synthetic/*/test"])
    _invoke(["decode", *common, "--test-sets", "synthetic/de/test,synthetic/en/test", "--method",
             "ctc-prefix-beam-search", "--beam", "3", "--checkpoint", str(env.ckpt)])  # two checkpoints: averaged
    arpa = env.root / "lm" / "lm.arpa"
    _invoke(["lm", "train", "--data-dir", str(env.data), "--datasets", "synthetic/de/test",
             "--datasets", "synthetic/en/test", "--order", "2", "--output", str(arpa)])
    graph = env.root / "graph"
    _invoke(["lm", "graph", "--arpa", str(arpa), "--checkpoint", str(env.ckpt), "--output-dir", str(graph)])
    _invoke(["decode", *common, "--test-sets", "synthetic/de/test", "--method", "wfst", "--graph", str(graph),
             "--lm-scale", "0.5"])

    d = out / "synthetic" / "de" / "ctc-greedy-search"
    recogs = (d / "recogs-test-ctc-greedy-search.txt").read_text().splitlines()
    assert len(recogs) == 6 and recogs[0].startswith("de-0") and recogs[0].endswith(":\tref=['guten', 'morgen', 'zusammen']")
    errs = (d / "errs-test-ctc-greedy-search.txt").read_text()
    assert errs.startswith("%WER = ") and "PER-UTT DETAILS" in errs and "PER-WORD STATS" in errs
    res = json.loads((d / "results-test-ctc-greedy-search.json").read_text())
    assert res["dataset"] == "synthetic/de/test" and res["num_utts"] == 3 and res["wer"]["ref_len"] == 12
    assert res["rtf"] > 0 and res["audio_seconds"] > 1
    assert (d / "wer-summary-test.txt").read_text().startswith("settings\tWER\nctc-greedy-search\t")
    beam_dir = out / "synthetic" / "en" / "ctc-prefix-beam-search"
    assert (beam_dir / "recogs-test-ctc-prefix-beam-search-beam-3.txt").exists()
    wfst = json.loads((out / "synthetic" / "de" / "wfst" / "results-test-wfst-kaldi-beam-16-lm-scale-0.5.json").read_text())
    lm_words = {l.split()[0] for l in (graph / "words.txt").read_text().splitlines()}
    hyps = [json.loads(l)["hyp"] for l in (out / "synthetic/de/wfst/hyps-test-wfst-kaldi-beam-16-lm-scale-0.5.jsonl").read_text().splitlines()]
    assert all(w in lm_words for h in hyps for w in h.split())  # WFST output only has LM words
    assert wfst["graph"] == str(graph)
    assert (out / "decode-ctc-greedy-search.json").exists()

    res = _invoke(["score", "--decode-dir", str(out)])
    md = (out / "scores.md").read_text()
    assert "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|" in md and "## Per-language results" in md
    assert "|synthetic/de/test (ctc-greedy-search)|3|12|" in md
    assert (out / "wer.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((out / "scores.json").read_text())["rows"]
    assert {(r["dataset"], r["setting"]) for r in rows} >= {("synthetic/en/test", "ctc-prefix-beam-search-beam-3")}

    rep = _invoke(["report", str(out.parent), "--output-dir", str(env.root / "report")])
    rj = json.loads((env.root / "report" / "report.json").read_text())
    assert rj["languages"] == ["de", "en"] and rj["testsets"] == ["synthetic/test"]
    assert (env.root / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| de |" in (env.root / "report" / "report.md").read_text()
    only = _invoke(["report", str(out), "--method", "ctc-greedy-search", "--output-dir", str(env.root / "r2")])
    cells = json.loads((env.root / "r2" / "report.json").read_text())["cells"]
    assert {c["setting"] for c in cells} == {"ctc-greedy-search"}


class _FixedOutputModel(torch.nn.Module):
    """Emits log-probs that spell `ids` (then blanks) for every utterance: a decoder-pipeline oracle."""

    def __init__(self, ids, vocab):
        super().__init__()
        self.ids, self.vocab = ids, vocab

    def forward(self, feats, lens):
        B, T = feats.shape[0], max(2 * len(self.ids) + 2, feats.shape[1] // 4)
        lp = torch.full((B, T, self.vocab), -20.0)
        lp[:, :, 0] = 0.0
        for i, t in enumerate(self.ids):
            lp[:, 2 * i, 0] = -20.0
            lp[:, 2 * i, t] = 0.0
        return lp, torch.full((B,), T, dtype=torch.int64)


def test_hyps_and_refs_share_the_normalizer(env, tmp_path):
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.runner import DecodeOptions, run_decode

    tok = load_for_inference([env.ckpt]).tokenizer
    ids = tok.encode("GUTEN Morgen, zusammen!!", lang="de")
    fake = SimpleNamespace(model=_FixedOutputModel(ids, tok.vocab_size), tokenizer=tok)
    for method in ("ctc-greedy-search", "ctc-prefix-beam-search"):
        res = run_decode(fake, env.data, ["synthetic/de/test"], DecodeOptions(method=method), tmp_path)[0]
        hyps = {json.loads(l)["id"][:4]: json.loads(l) for l in
                (tmp_path / "synthetic/de" / method / f"hyps-test-{DecodeOptions(method=method).setting}.jsonl").read_text().splitlines()}
        assert hyps["de-0"]["ref"] == hyps["de-0"]["hyp"] == "guten morgen zusammen"
        assert hyps["de-0"]["ref_raw"] == "Guten Morgen, zusammen!"
        # de-0 is exactly right; the others share no word with the hypothesis: 3 sub + 2 del, 3 sub + 1 del
        assert res["wer"]["errors"] == 9 and res["wer"]["ref_len"] == 12
        assert res["lid_accuracy"] == 1.0


def test_decode_errors_name_the_file(env, tmp_path):
    from typer.testing import CliRunner

    from mlma_cli.cli.main import app

    r = CliRunner().invoke(app, ["decode", "--checkpoint", str(env.ckpt), "--data-dir", str(env.data),
                                 "--test-sets", "synthetic/fr/test", "--output-dir", str(tmp_path)])
    assert isinstance(r.exception, MlmaError) and "synthetic/fr/test" in str(r.exception)
    r = CliRunner().invoke(app, ["decode", "--checkpoint", str(env.ckpt), "--data-dir", str(env.data),
                                 "--test-sets", "synthetic/de/test", "--method", "wfst", "--output-dir", str(tmp_path)])
    assert isinstance(r.exception, MlmaError) and "--graph" in str(r.exception)
    r = CliRunner().invoke(app, ["decode", "--checkpoint", str(tmp_path / "nope.pt"), "--data-dir", str(env.data),
                                 "--test-sets", "synthetic/de/test", "--output-dir", str(tmp_path)])
    assert isinstance(r.exception, MlmaError) and "nope.pt" in str(r.exception)
    r = CliRunner().invoke(app, ["score", "--decode-dir", str(tmp_path / "empty")])
    assert isinstance(r.exception, MlmaError) and "empty" in str(r.exception)
