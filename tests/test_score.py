"""WER/CER counts against kaldialign and jiwer, ESPnet tables on hand-computed inputs, bootstrap CIs, files."""
from __future__ import annotations

import random

import jiwer
import kaldialign
import pytest

from mlma_cli.score.bootstrap import bootstrap_ci
from mlma_cli.score.files import Utt, read_wer_summary, update_wer_summary, write_testset_results
from mlma_cli.score.tables import espnet_table, table_row
from mlma_cli.score.wer import edit_counts, wer_details

FIXED = [
    ("the cat sat on the mat", "the hat sat on mat a"),
    ("a b c", "a b c"),
    ("", "x y"),
    ("one two three", ""),
    ("ich bin ein berliner", "ich bin berliner ein"),
]


def _random_pairs(n, seed):
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "e"]
    out = []
    for _ in range(n):
        r = [rng.choice(vocab) for _ in range(rng.randint(0, 8))]
        h = [rng.choice(vocab) for _ in range(rng.randint(0, 8))]
        out.append((" ".join(r), " ".join(h)))
    return out


@pytest.mark.parametrize("pairs", [FIXED, _random_pairs(200, 0)])
def test_counts_equal_kaldialign_per_utterance(pairs):
    for ref, hyp in pairs:
        ours, ali = edit_counts(ref.split(), hyp.split())
        ka = kaldialign.edit_distance(ref.split(), hyp.split())
        assert ours.errors == ka["total"]
        assert (ours.ins, ours.dels, ours.sub) == (ka["ins"], ka["del"], ka["sub"]), (ref, hyp)
        # the alignment is consistent with the counts and reproduces both sides
        assert [r for r, _ in ali if r != "*"] == ref.split()
        assert [h for _, h in ali if h != "*"] == hyp.split()


@pytest.mark.parametrize("pairs", [FIXED, _random_pairs(200, 1)])
def test_corpus_wer_and_cer_equal_jiwer(pairs):
    refs = [r for r, _ in pairs]
    hyps = [h for _, h in pairs]
    w = jiwer.process_words(refs, hyps)
    det = wer_details(refs, hyps).total
    assert det.errors == w.substitutions + w.deletions + w.insertions
    assert det.ref_len == w.hits + w.substitutions + w.deletions
    c = jiwer.process_characters(refs, hyps)
    dc = wer_details(refs, hyps, unit="char").total
    assert dc.errors == c.substitutions + c.deletions + c.insertions


def test_table_on_known_counts():
    refs = ["the cat sat on the mat", "a b c", "one two three"]
    hyps = ["the hat sat on mat a", "a b c", ""]
    t = wer_details(refs, hyps).total
    # by hand: utt1 the (cat->hat) sat on (the->*) mat (*->a): 1 sub, 1 del, 1 ins; utt3 3 deletions
    assert (t.ref_len, t.corr, t.sub, t.dels, t.ins, t.sents, t.sent_errs) == (12, 7, 1, 4, 1, 3, 2)
    assert t.rate == pytest.approx(100 * 6 / 12)
    row = table_row("synthetic/de/test", t)
    assert row == "|synthetic/de/test|3|12|58.3|8.3|33.3|8.3|50.0|66.7|"
    table = espnet_table([("x", t)], title="WER")
    assert table.splitlines()[2] == "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|"


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = random.Random(0)
    errs = [rng.randint(0, 4) for _ in range(300)]
    lens = [rng.randint(4, 12) for _ in range(300)]
    point = 100 * sum(errs) / sum(lens)
    a = bootstrap_ci(errs, lens, seed=7)
    b = bootstrap_ci(errs, lens, seed=7)
    c = bootstrap_ci(errs, lens, seed=8)
    assert a == b
    assert a != c
    assert a[0] < point < a[1]
    assert a[1] - a[0] < 10
    assert bootstrap_ci([0] * 5, [3] * 5) == (0.0, 0.0)


def test_testset_files(tmp_path):
    utts = [Utt("u2", "de", "ich bin da", "ich bin"), Utt("u1", "de", "hallo welt", "hallo welt")]
    res = write_testset_results(tmp_path, "test", "ctc-greedy-search", utts, extra={"rtf": 0.1})
    assert res["wer"]["errors"] == 1 and res["wer"]["ref_len"] == 5
    recogs = (tmp_path / "recogs-test-ctc-greedy-search.txt").read_text().splitlines()
    assert recogs[0] == "u1:\tref=['hallo', 'welt']"
    assert recogs[3] == "u2:\thyp=['ich', 'bin']"
    errs = (tmp_path / "errs-test-ctc-greedy-search.txt").read_text()
    assert errs.startswith("%WER = 20.00\nErrors: 0 insertions, 1 deletions, 0 substitutions, over 5 reference words (4 correct)")
    assert "u2:\tich bin (da->*)" in errs
    assert "DELETIONS: count ref\n1   da\n" in errs
    update_wer_summary(tmp_path / "wer-summary-test.txt", "ctc-prefix-beam-search-beam-4", 10.0)
    assert read_wer_summary(tmp_path / "wer-summary-test.txt") == [
        ("ctc-prefix-beam-search-beam-4", 10.0), ("ctc-greedy-search", 20.0)]
    assert res["wer"]["ci95"][0] <= 20.0 <= res["wer"]["ci95"][1]


def _summary(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("settings\tWER\n" + "".join(f"{s}\t{w}\n" for s, w in rows))


def test_report_gathers_wer_summaries_into_language_by_testset_table(tmp_path):
    import json

    from mlma_cli.score.report import write_report

    exp = tmp_path / "exp"
    _summary(exp / "decode/librispeech/en/ctc-greedy-search/wer-summary-test-clean.txt", [("ctc-greedy-search", 5.5)])
    _summary(exp / "decode/librispeech/en/wfst/wer-summary-test-clean.txt", [("wfst-kaldi-beam-16-lm-scale-1", 4.25)])
    _summary(exp / "decode/commonvoice/de/ctc-greedy-search/wer-summary-test.txt", [("ctc-greedy-search", 12.0)])
    _summary(exp / "decode/commonvoice/en/ctc-greedy-search/wer-summary-test.txt", [("ctc-greedy-search", 15.0)])
    (exp / "decode/stray/wer-summary-x.txt").parent.mkdir(parents=True)
    (exp / "decode/stray/wer-summary-x.txt").write_text("settings\tWER\nfoo\t1.0\n")  # not <corpus>/<lang>/<method>
    res = write_report(exp, tmp_path / "out")
    md = (tmp_path / "out/report.md").read_text().splitlines()
    assert "| language | commonvoice/test | librispeech/test-clean |" in md
    assert "| de | 12.00 | - |" in md and "| en | 15.00 | 4.25 |" in md  # best setting per cell
    data = json.loads((tmp_path / "out/report.json").read_text())
    assert data["languages"] == ["de", "en"] and len(data["cells"]) == 3
    assert (tmp_path / "out/report.png").read_bytes()[:4] == b"\x89PNG"
    write_report(exp, tmp_path / "g", method="ctc-greedy-search")
    assert "| en | 15.00 | 5.50 |" in (tmp_path / "g/report.md").read_text()
    from mlma_cli.errors import MlmaError

    with pytest.raises(MlmaError, match="no wer-summary"):
        write_report(exp, tmp_path / "x", setting="nope")


def test_score_cli_on_text_files(tmp_path):
    import json

    from typer.testing import CliRunner

    from mlma_cli.cli.main import app

    (tmp_path / "ref.txt").write_text("u1 Guten Morgen, Welt!\nu2 Wo ist der Bahnhof?\n")
    (tmp_path / "hyp.txt").write_text("u1 guten morgen welt\nu2 wo ist bahnhof\n")
    r = CliRunner().invoke(app, ["score", "--ref", str(tmp_path / "ref.txt"), "--hyp", str(tmp_path / "hyp.txt"),
                                 "--lang", "de", "--name", "mine"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "scores.json").read_text())["rows"]
    assert rows[0]["wer"]["errors"] == 1 and rows[0]["wer"]["ref_len"] == 7  # punctuation/case normalized away
    assert "|mine (text)|2|7|85.7|0.0|14.3|0.0|14.3|50.0|" in (tmp_path / "scores.md").read_text()
