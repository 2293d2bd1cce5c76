"""The installed `mlma` console script as users run it: usage errors, user mistakes and interrupts.

Each case runs `.venv/bin/mlma` (the script pip generated, with the typer this install resolved) in a
subprocess and checks the exit status, that stderr is one line of the expected form, and that no traceback
shows. Corpus encodings are checked on the readers, which the prepare tests run end to end.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import corpus_fixtures as cf

MLMA = shutil.which("mlma", path=str(Path(sys.executable).parent)) or shutil.which("mlma")
pytestmark = pytest.mark.skipif(MLMA is None, reason="the mlma console script is not installed (pip install -e .)")


def run_mlma(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([MLMA, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def stderr_lines(proc) -> list:
    # INFO log lines (e.g. the device choice) are not errors; everything else on stderr is counted
    return [l for l in proc.stderr.splitlines() if l.strip() and " INFO " not in l]


CONFIGS = {
    "heads.yaml": "model:\n  name: conformer-tiny\n  d_model: 100\n  num_heads: 3\n",
    "typo.yaml": "model:\n  name: conmamba-tiny\n  d_modle: 96\n",
    "size.yaml": "model:\n  name: conmamba-huge\n",
    "broken.yaml": "model: [unclosed\n  x: : y\n",
    "latin1.yaml": None,  # written as bytes below
}

USAGE_CASES = [
    (["decode", "--bogus"], "No such option: --bogus"),
    (["transcribe", "x.wav"], "Missing option '--checkpoint'"),
    (["features", "--jobs", "abc"], "Invalid value for '--jobs'"),
    (["nonexistent"], "No such command 'nonexistent'"),
    (["train", "--config"], "requires an argument"),
    (["decode", "-c"], "requires an argument"),
    (["lm", "graph", "--topo"], "requires an argument"),
]

ERROR_CASES = [
    # (args, text the one error line must contain)
    (["train", "--config", "heads.yaml", "--exp-dir", "exp1"], "heads.yaml: invalid model config: d_model=100 not divisible"),
    (["train", "--config", "typo.yaml", "--exp-dir", "exp2"], "typo.yaml: invalid model config: unknown key 'd_modle'"),
    (["train", "--config", "size.yaml", "--exp-dir", "exp3"], "unknown model size 'conmamba-huge'"),
    (["train", "--config", "broken.yaml", "--exp-dir", "exp4"], "broken.yaml: not valid YAML at line 2"),
    (["train", "--config", "latin1.yaml", "--exp-dir", "exp5"], "latin1.yaml: not UTF-8"),
    (["train", "--config", "missing.yaml", "--exp-dir", "exp6"], "config file missing.yaml not found"),
    (["train", "--model", "conmamba-tiny", "--train", "synthetic/en/train", "--tokenizer", "nodata/tok.model",
      "--exp-dir", "exp7"], "tokenizer model nodata/tok.model not found"),
    (["decode", "-c", "missing.pt", "-t", "synthetic/en/test"], "checkpoint missing.pt not found"),
    (["decode", "-c", "junk.pt", "-t", "synthetic/en/test"], "checkpoint junk.pt is corrupt"),
    (["decode", "-c", "junk.pt", "-t", "x/y/z", "--device", "tpu"], "--device 'tpu'"),
    (["transcribe", "empty.mp3", "-c", "missing.pt"], "checkpoint missing.pt not found"),
    (["prepare", "commonvoice", "no_such_dir", "--data-dir", "d"], "commonvoice:"),
    (["model-info", "not-a-size"], "not-a-size: neither a named size"),
    (["average", "--exp-dir", "no_exp", "--output", "a.pt", "--last", "2"], "no_exp"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_errors")
    for name, text in CONFIGS.items():
        if text is not None:
            (d / name).write_text(text)
    (d / "latin1.yaml").write_bytes("model:\n  name: conmamba-tiny\n# r\xe9glages\n".encode("latin-1"))
    (d / "junk.pt").write_bytes(b"this is no checkpoint")
    (d / "empty.mp3").write_bytes(b"")
    return d


def test_version(workdir):
    from mlma_cli import __version__

    proc = run_mlma("--version", cwd=workdir)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mlma {__version__}" and not proc.stderr


def test_no_arguments_prints_help_as_usage_error(workdir):
    proc = run_mlma(cwd=workdir)
    assert proc.returncode == 2
    assert "Usage: mlma" in proc.stdout and "Commands" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,expected", USAGE_CASES, ids=[" ".join(a) for a, _ in USAGE_CASES])
def test_usage_error_is_one_line_exit_2(workdir, args, expected):
    proc = run_mlma(*args, cwd=workdir)
    lines = stderr_lines(proc)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Usage: mlma") and "Error: " in lines[0] and expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args,expected", ERROR_CASES, ids=[" ".join(a) for a, _ in ERROR_CASES])
def test_user_mistake_is_one_error_line_exit_1(workdir, args, expected):
    proc = run_mlma(*args, cwd=workdir)
    lines = stderr_lines(proc)
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mlma: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_failed_validation_leaves_no_exp_dir(workdir):
    for args, _ in ERROR_CASES:
        if args[0] == "train":
            exp = args[args.index("--exp-dir") + 1]
            run_mlma(*args, cwd=workdir)
            assert not (workdir / exp).exists(), f"{exp} left behind by mlma {' '.join(args)}"


def test_deprecated_spelling_still_works_with_a_warning(workdir):
    proc = run_mlma("tokenizer", "--cuts", "none.jsonl.gz", "--out-dir", "lang", cwd=workdir)
    lines = stderr_lines(proc)
    assert proc.returncode == 1
    assert lines[0] == "mlma: warning: --out-dir is deprecated for `mlma tokenizer`; use --output-dir"
    assert lines[1].startswith("mlma: error: cut manifest none.jsonl.gz not found")


def test_env_json_flag_prints_json(workdir):
    import json

    proc = run_mlma("env", "--json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "packages" in json.loads(proc.stdout) or json.loads(proc.stdout)


def test_interrupt_and_exit_codes_come_through():
    """KeyboardInterrupt -> 130, typer.Exit(130) (interrupted training) -> 130 despite standalone_mode=False."""
    code = (
        "import sys, typer\n"
        "from mlma_cli.cli import main as m\n"
        "@m.app.command('boom-int')\n"
        "def _a():\n    raise KeyboardInterrupt\n"
        "@m.app.command('boom-exit')\n"
        "def _b():\n    raise typer.Exit(130)\n"
        "@m.app.command('boom-bug')\n"
        "def _c():\n    raise ZeroDivisionError('x')\n"
        "sys.exit(m.run([sys.argv[1]]))\n"
    )
    for cmd, status, err in (("boom-int", 130, "mlma: interrupted"), ("boom-exit", 130, "mlma: interrupted"),
                             ("boom-bug", 1, "mlma: error: internal error: ZeroDivisionError")):
        proc = subprocess.run([sys.executable, "-c", code, cmd], capture_output=True, text=True, timeout=120)
        assert proc.returncode == status, (cmd, proc.stderr)
        assert err in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ corpus text that is not UTF-8
def test_latin1_line_in_commonvoice_tsv_is_skipped_and_counted(tmp_path):
    from mlma_cli.data.corpora.common import PROBLEM, read_tsv

    tsv = tmp_path / "train.tsv"
    good = "\t".join(cf.cv_row("a.mp3", "Guten Tag.", "de"))
    bad = "\t".join(cf.cv_row("b.mp3", "Caf\xe9 cr\xe8me.", "de"))
    tsv.write_bytes(("\t".join(cf.CV_HEADER) + "\n" + good + "\n").encode() + (bad + "\n").encode("latin-1"))
    columns, rows = read_tsv(tsv)
    assert columns == list(cf.CV_HEADER) and len(rows) == 2
    assert PROBLEM not in rows[0] and rows[0]["sentence"] == "Guten Tag."
    assert "line 3 is not UTF-8" in rows[1][PROBLEM] and "iconv" in rows[1][PROBLEM]


def test_latin1_transcript_in_librispeech_is_a_bad_item(tmp_path):
    from mlma_cli.data.corpora import prepare_corpus
    from mlma_cli.data.bad_items import read_bad_items

    root = cf.make_librispeech(tmp_path / "ls", {"dev-clean": 2})
    trans = root / "LibriSpeech/dev-clean/103/1240/103-1240.trans.txt"
    lines = trans.read_text().splitlines()
    trans.write_bytes((lines[0] + "\n").encode() + (lines[1] + " CAF\xc9\n").encode("latin-1"))
    prepare_corpus("librispeech", root, tmp_path / "data")
    bad = read_bad_items(tmp_path / "data/manifests/librispeech/bad_items.tsv")
    assert [b.id for b in bad] == ["103-1240-0001"] and "not UTF-8" in bad[0].reason


# ------------------------------------------------------------------ progress callbacks under the bars
def test_progress_bar_is_off_without_a_terminal_or_when_quiet():
    from mlma_cli.cli.progress import progress_bar

    with progress_bar("x", quiet=True) as update:
        assert update is None
    with progress_bar("x") as update:  # pytest captures stderr: not a terminal
        assert update is None


def test_prepare_reports_probing_progress_over_all_splits(tmp_path):
    from mlma_cli.data.corpora import prepare_corpus

    root = cf.make_librispeech(tmp_path / "ls", {"dev-clean": 2, "test-clean": 3})
    calls = []
    prepare_corpus("librispeech", root, tmp_path / "data", progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5) and all(t == 5 for _, t in calls) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_old_train_dash_c_still_reads_the_config(workdir):
    proc = run_mlma("train", "-c", "size.yaml", "--exp-dir", "exp_c", cwd=workdir)
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and "-c is deprecated for `mlma train`; use --config" in lines[0]
    assert "unknown model size 'conmamba-huge'" in lines[1]
