"""Subtitle / table outputs against hand-written golden files; input collection; the CLI's files and streams."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_transcribe import espeak, needs_tools


def _transcript():
    from mlma_cli.decode.results import Segment, Token, Transcript, Word

    def w(text, a, b, c=0.9):
        return Word(text, a, b, c, [Token(7, "\u2581" + text, a, b, c)])

    s1 = Segment(0.5, 4.2, "hello world", "en", [w("hello", 0.52, 0.9), w("world", 1.0, 1.3)])
    long_words = [w(f"word{k:02d}", 5.0 + 0.5 * k, 5.2 + 0.5 * k) for k in range(14)]  # 14 * 7 chars: two cues
    s2 = Segment(4.8, 3601.0, " ".join(x.text for x in long_words), "en", long_words + [w("late", 3600.25, 3600.5)])
    return Transcript("talk.wav", s1.text + " " + s2.text, "en", 3601.5, 1.0, [s1, s2])


WORDS_0_11 = " ".join(f"word{k:02d}" for k in range(12))  # 83 characters: one more word would pass 84

SRT = f"""1
00:00:00,520 --> 00:00:01,800
hello world

2
00:00:05,000 --> 00:00:11,000
{WORDS_0_11}

3
00:00:11,000 --> 00:00:12,200
word12 word13

4
01:00:00,250 --> 01:00:01,000
late

"""


def test_golden_srt_vtt_tsv_txt():
    """Cues: 'hello world' (0.1 s gap); a line break before 84 characters; 'late' after a long pause. A cue ends
    0.5 s after its last word, capped by the next cue's start and its segment's end."""
    from mlma_cli.decode.outputs import to_srt, to_tsv, to_txt, to_vtt

    t = _transcript()
    assert to_srt(t) == SRT
    vtt = "WEBVTT\n\n" + "\n\n".join("\n".join(block.split("\n")[1:]).replace(",", ".")
                                    for block in SRT.strip().split("\n\n")) + "\n\n"
    assert to_vtt(t) == vtt
    assert vtt.startswith("WEBVTT\n\n00:00:00.520 --> 00:00:01.800\nhello world\n\n")
    assert to_tsv(t) == ("start\tend\ttext\n520\t1800\thello world\n5000\t11000\t" + WORDS_0_11 +
                         "\n11000\t12200\tword12 word13\n3600250\t3601000\tlate\n")
    assert to_txt(t).splitlines() == ["hello world", t.segments[1].text]


def test_format_names_and_timestamps():
    from mlma_cli.decode.outputs import FORMATS, format_timestamp, output_stems, parse_formats

    assert parse_formats("all") == list(FORMATS) and parse_formats("srt, vtt") == ["srt", "vtt"]
    with pytest.raises(ValueError):
        parse_formats("docx")
    assert format_timestamp(3661.0015) == "01:01:01,002" and format_timestamp(0.9996, ".") == "00:00:01.000"
    assert output_stems(["a/x.wav", "b/x.flac", "y.mp3", "cut-1"]) == ["x", "x-2", "y", "cut-1"]


def test_json_layout_roundtrips():
    t = _transcript()
    d = json.loads(json.dumps(t.to_dict()))
    assert d["segments"][0]["words"][0] == {"text": "hello", "start": 0.52, "end": 0.9, "confidence": 0.9,
                                            "tokens": [{"id": 7, "text": "\u2581hello", "start": 0.52, "end": 0.9,
                                                        "confidence": 0.9}]}
    assert [w.text for w in t.words][:2] == ["hello", "world"] and len(t.tokens) == len(t.words)


def test_collect_inputs_dirs_lists_manifests(tmp_path):
    import numpy as np
    import soundfile as sf
    from lhotse import Recording, RecordingSet

    from mlma_cli.decode.audio_inputs import collect_inputs, open_source

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for p in ("d/b.wav", "d/sub/a.flac", "c.wav"):
        sf.write(str(tmp_path / p), np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "d" / "notes.txt").write_text("x")
    (tmp_path / "list.txt").write_text("# files\nc.wav\n\nmissing.wav\n")
    RecordingSet.from_recordings([Recording.from_file(tmp_path / "c.wav", recording_id="rec-c")]).to_file(
        tmp_path / "recs.jsonl.gz")
    got = collect_inputs([str(tmp_path / "d"), f"@{tmp_path / 'list.txt'}", str(tmp_path / "recs.jsonl.gz")])
    assert [Path(i.name).name for i in got] == ["b.wav", "a.flac", "c.wav", "missing.wav", "rec-c"]
    assert open_source(got[-1]).read(0, None).shape == (1600,)


@needs_tools
def test_cli_writes_subtitles_and_keeps_stdout_stable(tmp_path):
    from typer.testing import CliRunner

    from mlma_cli.cli.main import app
    from tests.test_transcribe import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.pt")
    a = espeak("hello world", "en", tmp_path / "a.wav")
    (tmp_path / "in").mkdir()
    b = espeak("guten morgen", "de", tmp_path / "in" / "b.wav")
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["transcribe", str(a), "-c", str(ckpt), "-o", str(out), "--output-format", "srt,vtt",
                              "-q"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("\n") == 1 and res.stdout.startswith(f"{a}\t")  # one line, even for one file
    assert sorted(p.name for p in out.iterdir()) == ["a.srt", "a.vtt"]
    assert (out / "a.vtt").read_text().startswith("WEBVTT\n\n")
    res = runner.invoke(app, ["transcribe", str(tmp_path / "in"), str(a), str(tmp_path / "nope.wav"), "-c", str(ckpt),
                              "--json", "--batch-size", "2"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert [r["file"] for r in doc["results"]] == [str(b), str(a)]
    assert doc["results"][0]["segments"][0]["end"] > 0.3
    assert "mlma: error: " in res.stderr and "nope.wav" in res.stderr
    res = runner.invoke(app, ["transcribe", str(a), "-c", str(ckpt), "--output-format", "docx"])
    assert res.exit_code != 0
