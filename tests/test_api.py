"""The Python API (`import mlma`): torch and ONNX backends, inputs (files, arrays, (array, rate)), batching,
token times of ONNX vs torch, torch-free ONNX use, errors, and the README example run as written.

One tiny random-weight ConMamba checkpoint (test_export's helper) and its ONNX export are made once per module.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_export import SMALL, _save_random_checkpoint  # noqa: E402  (also skips without onnxruntime/onnxscript)

import mlma  # noqa: E402
from mlma_cli.errors import MlmaError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
README_MODEL = "exp/conmamba_tiny/package"  # the path the README example loads
README_AUDIO = "speech.wav"                  # the file it transcribes (made in the cwd of the test)
LENGTHS = (16000, 27200, 9600, 20800)        # samples: 1.0, 1.7, 0.6, 1.3 s (whole 10 ms frames)


def _audio(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t) * np.sin(2 * np.pi * 1.5 * t) ** 2
    return (x + 0.05 * g.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread):
    import soundfile as sf

    from mlma_cli.export.onnx_export import export_checkpoint

    tmp = tmp_path_factory.mktemp("api")
    ckpt = _save_random_checkpoint(tmp / "tiny.pt", dict(encoder="conmamba", **SMALL), seed=3)
    export_checkpoint([ckpt], tmp / "onnx")
    arrays = [_audio(n, s) for s, n in enumerate(LENGTHS)]
    wavs = []
    for k, a in enumerate(arrays):
        p = tmp / f"u{k}.wav"
        sf.write(p, a, 16000, subtype="FLOAT")  # float samples: the file reads back as the array
        wavs.append(str(p))
    return ckpt, tmp / "onnx", arrays, wavs


@pytest.fixture(scope="module")
def torch_model(tiny):
    return mlma.load(tiny[0], device="cpu")


@pytest.fixture(scope="module")
def onnx_model(tiny):
    return mlma.load(tiny[1], threads=1)


def _key(results):
    return [(r.text, r.language, [(t.id, round(t.start, 6), round(t.end, 6)) for t in r.tokens]) for r in results]


def test_torch_backend_equals_transcribe_files(tiny, torch_model):
    from mlma_cli.checkpoint import load_for_inference
    from mlma_cli.decode.transcribe import transcribe_files

    ckpt, _, _, wavs = tiny
    assert torch_model.backend == "torch" and torch_model.sample_rate == 16000
    assert torch_model.languages == ["de", "en"] and torch_model.info["vocab_size"] > 0
    want, errors = transcribe_files(load_for_inference([ckpt]), wavs[:1])
    assert not errors
    r, = torch_model.transcribe([wavs[0]])
    assert r.text == want[0].text and r.language == want[0].language and r.tokens == want[0].tokens
    assert r.tokens, "the random model should emit tokens (else the time checks below mean nothing)"
    t = r.tokens[0]
    assert 0 <= t.start < t.end <= r.duration + 0.04 and 0 < t.confidence <= 1 and isinstance(t.text, str)
    assert isinstance(r.words, list) and r.to_dict()["text"] == r.text


def test_arrays_files_pairs_and_batch_sizes_agree(tiny, torch_model):
    _, _, arrays, wavs = tiny
    by_file = torch_model.transcribe(wavs, batch_size=4)
    assert _key(by_file) == _key(torch_model.transcribe(arrays, batch_size=4))
    assert _key(by_file) == _key(torch_model.transcribe(wavs, batch_size=1))
    # mixed inputs keep their order; an (array, rate) pair at 8 kHz is resampled
    mixed = torch_model.transcribe([arrays[0], wavs[1], (arrays[2], 16000), wavs[3]], batch_size=2)
    assert _key(mixed) == _key(by_file)
    r8, = torch_model.transcribe([(arrays[0][::2].copy(), 8000)])
    assert abs(r8.duration - 1.0) < 1e-3


def test_onnx_backend_matches_torch_ids_and_times(tiny, torch_model, onnx_model):
    _, _, arrays, wavs = tiny
    assert onnx_model.backend == "onnx" and onnx_model.languages == torch_model.languages
    assert onnx_model.info["subsampling_factor"] == 4
    t_res = torch_model.transcribe(wavs, batch_size=4)
    o_res = onnx_model.transcribe(wavs, batch_size=4)
    assert _key(o_res) == _key(t_res)
    assert sum(len(r.tokens) for r in o_res) > 0
    for o, t in zip(o_res, t_res):
        assert [w.text for w in o.words] == [w.text for w in t.words]
        assert np.allclose([x.confidence for x in o.tokens], [x.confidence for x in t.tokens], atol=1e-2)
    assert _key(onnx_model.transcribe(arrays, batch_size=1)) == _key(o_res)
    # a forced language is reported (and rules out the other tags)
    assert {r.language for r in onnx_model.transcribe(arrays[:2], language="en")} == {"en"}
    assert _key(onnx_model.transcribe(arrays[:2], language="en")) == _key(
        torch_model.transcribe(arrays[:2], language="en"))


def test_onnx_long_audio_windows_match_torch(tiny, torch_model, onnx_model):
    """Audio past max_segment_seconds is cut the same way (vad='none' windows) and decoded the same by both."""
    _, _, arrays, _ = tiny
    long = np.concatenate(arrays * 2)  # 9.2 s
    kw = dict(max_segment_seconds=2.5, context_seconds=0.5, vad="none")
    o, = onnx_model.transcribe([long], **kw)
    t, = torch_model.transcribe([long], **kw)
    assert len(o.segments) == len(t.segments) >= 4
    assert [(s.start, s.end) for s in o.segments] == [(s.start, s.end) for s in t.segments]
    assert _key([o]) == _key([t])
    assert all(a.start <= b.start for a, b in zip(o.tokens, o.tokens[1:]))  # times are in the file, in order
    with pytest.raises(MlmaError, match="vad='none'"):
        onnx_model.transcribe([long], vad="silero")


def test_onnx_needs_no_torch(tiny, onnx_model):
    _, export_dir, arrays, wavs = tiny
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any `import torch` fails
        import numpy as np, soundfile as sf
        import mlma
        m = mlma.load({str(export_dir)!r}, threads=1)
        x, _ = sf.read({wavs[1]!r}, dtype="float32")
        r1, r2 = m.transcribe([x, {wavs[2]!r}])
        long, = m.transcribe([np.concatenate([x] * 4)], max_segment_seconds=2.0)  # windows, numpy only
        print(json.dumps([m.backend, r1.text, [t.id for t in r1.tokens], r2.text, len(long.segments)]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    backend, text1, ids1, text2, n_long = json.loads(out.stdout.strip().splitlines()[-1])
    want = onnx_model.transcribe([arrays[1], arrays[2]])
    assert backend == "onnx" and text1 == want[0].text and ids1 == [t.id for t in want[0].tokens]
    assert text2 == want[1].text and n_long >= 3


def test_package_with_onnx_and_hf_choose_the_backend(tiny, tmp_path, monkeypatch, onnx_model):
    """A package's onnx/ export loads with backend='onnx' (also through hf:), and by itself without torch."""
    import huggingface_hub

    from mlma_cli.package.pack import pack_model

    ckpt, export_dir, arrays, _ = tiny
    pkg = pack_model([ckpt], tmp_path / "pkg", onnx_dir=export_dir).out_dir
    bare = pack_model([ckpt], tmp_path / "bare").out_dir
    want = _key(onnx_model.transcribe(arrays[:2]))
    assert mlma.load(pkg, device="cpu").backend == "torch"
    m = mlma.load(pkg, backend="onnx", threads=1)
    assert m.backend == "onnx" and _key(m.transcribe(arrays[:2])) == want
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, revision=None, **kw: str(pkg))
    assert _key(mlma.load("hf:someorg/mlma-test", backend="onnx", threads=1).transcribe(arrays[:2])) == want
    with pytest.raises(MlmaError, match="no onnx/ export"):
        mlma.load(bare, backend="onnx")
    with pytest.raises(MlmaError, match="holds an ONNX export"):
        mlma.load(export_dir, backend="torch")
    with pytest.raises(ValueError, match="backend must be"):
        mlma.load(pkg, backend="tensorrt")
    code = (f"import sys; sys.modules['torch'] = None; import numpy as np, mlma; m = mlma.load({str(pkg)!r}); "
            f"x = np.load({str(tmp_path / 'a.npy')!r}); print(m.backend, m.transcribe([x])[0].text)")
    np.save(tmp_path / "a.npy", arrays[0])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"onnx {onnx_model.transcribe(arrays[:1])[0].text}".strip()


def test_onnx_export_without_tokenizer_model_uses_tokens_txt(tiny, tmp_path, onnx_model):
    """tokens.txt alone gives the same token ids, times and languages (text from the pieces)."""
    import shutil

    _, export_dir, arrays, _ = tiny
    bare = tmp_path / "bare"
    shutil.copytree(export_dir, bare)
    (bare / "tokenizer.model").unlink()
    m = mlma.load(bare, threads=1)
    assert m._impl.model.tokenizer is None
    got, want = m.transcribe(arrays), onnx_model.transcribe(arrays)
    assert [[(t.id, t.text, t.start, t.end) for t in r.tokens] for r in got] == \
        [[(t.id, t.text, t.start, t.end) for t in r.tokens] for r in want]
    assert [r.language for r in got] == [r.language for r in want]
    assert [r.language for r in m.transcribe(arrays[:2], language="de")] == ["de", "de"]


def test_import_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, mlma; mlma.Result; mlma.Token; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_errors_are_one_line(tiny, tmp_path, onnx_model):
    with pytest.raises(MlmaError) as e:
        mlma.load("missing")
    assert "missing" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(MlmaError, match="neither a model package"):
        mlma.load(tmp_path)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(MlmaError, match="bad.wav"):
        onnx_model.transcribe([str(bad)])
    with pytest.raises(ValueError, match="too short"):
        onnx_model.transcribe([np.zeros(100, dtype=np.float32)])
    with pytest.raises(TypeError):
        onnx_model.transcribe("one.wav")


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    block, = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if b.startswith("import mlma")]
    return block


@pytest.mark.parametrize("which", ["torch", "onnx"])
def test_readme_example_runs(tiny, tmp_path, monkeypatch, capsys, which):
    ckpt, export_dir, arrays, wavs = tiny
    code = readme_example()
    assert code.count(f'"{README_MODEL}"') == 1 and README_AUDIO in code
    code = code.replace(f'"{README_MODEL}"', repr(str(ckpt if which == "torch" else export_dir)))
    Path(tmp_path / README_AUDIO).write_bytes(Path(wavs[0]).read_bytes())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()
