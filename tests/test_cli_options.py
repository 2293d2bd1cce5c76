"""Options that several commands share are defined once (cli/options.py) and mean the same everywhere."""
from __future__ import annotations

import dataclasses

import pytest


def test_search_option_defaults_are_decode_options_defaults():
    from mlma_cli.cli import options as opt
    from mlma_cli.decode.runner import DecodeOptions

    defaults = {f.name: f.default for f in dataclasses.fields(DecodeOptions)}
    for name in ("method", "beam", "graph", "backend", "search_beam", "output_beam", "max_active", "lm_scale",
                 "max_duration"):
        assert getattr(opt, name.upper()).default == defaults[name], name


def test_split_list():
    from mlma_cli.cli.options import split_list

    assert split_list(["de,fr", "it nl", " ,es, "]) == ["de", "fr", "it", "nl", "es"]
    assert split_list(None) == [] and split_list([]) == []


def test_one_bench_group_holds_every_benchmark():
    from mlma_cli.cli.main import app
    from mlma_cli.cli.options import bench_app

    groups = [g for g in app.registered_groups if g.name == "bench"]
    assert len(groups) == 1 and groups[0].typer_instance is bench_app
    names = {c.name for c in bench_app.registered_commands}
    assert names >= {"model", "scan", "train", "decode", "transcribe", "lid", "export"}


def test_prepare_lists_the_corpora_it_takes():
    import inspect

    from mlma_cli.cli.data_cmds import prepare
    from mlma_cli.data.corpora import CORPUS_NAMES

    help_text = inspect.signature(prepare).parameters["corpus"].default.help
    assert help_text.split(" | ") == list(CORPUS_NAMES)


def test_bench_model_lists_the_scan_backends():
    """The help is spelled out (cli/ imports no torch for --help); the values are model.config.SCAN_BACKENDS."""
    import inspect

    from mlma_cli.cli.model_cmds import bench_model
    from mlma_cli.model.config import SCAN_BACKENDS

    help_text = inspect.signature(bench_model).parameters["scan_backend"].default.help
    assert help_text.split(" | ") == list(SCAN_BACKENDS)


def test_bench_model_rejects_an_unknown_scan_backend_in_one_line(capsys):
    from mlma_cli.cli.main import run

    assert run(["bench", "model", "--scan-backend", "gpu", "--seconds", "1"]) == 1
    err = capsys.readouterr().err
    assert "--scan-backend: scan_backend='gpu', expected one of auto, torch, cuda" in err
    assert "internal error" not in err


@pytest.mark.parametrize("command", ["decode", "transcribe"])
def test_decode_and_transcribe_take_the_same_search_options(command):
    import typer.main

    from mlma_cli.cli.main import app

    cmd = typer.main.get_command(app).commands[command]
    have = {o for p in cmd.params for o in p.opts}
    assert have >= {"--method", "--beam", "--graph", "--backend", "--search-beam", "--output-beam", "--max-active",
                    "--lm-scale", "--device", "--max-duration"}
