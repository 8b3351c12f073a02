"""Every script: --help shows example command lines and explains every flag; long work shows progress."""
import argparse
import importlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, SR, voiced

SCRIPTS = ("prepare_data.py", "train.py", "denoise.py", "evaluate.py", "export.py", "benchmark.py", "compare.py",
           "check_overlap.py")


class Parsed(Exception):
    pass


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_examples_and_explains_every_flag(script, monkeypatch):
    r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "examples:" in r.stdout
    assert f"python {script}" in r.stdout.split("examples:")[1]
    seen = []

    def grab(self, *args, **kwargs):
        seen.append(self)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(Parsed):
        importlib.import_module(script[:-3]).parse_args([])
    unexplained = [a.option_strings or a.dest for a in seen[0]._actions if not a.help]
    assert not unexplained


def test_denoise_shows_progress_over_files(trained, tmp_path, capsys):
    import denoise
    rng = np.random.default_rng(0)
    names = []
    for name in "abcd":
        sf.write(tmp_path / f"{name}.wav", voiced(0.5, SR, 150, rng), SR)
        names.append(str(tmp_path / f"{name}.wav"))
    (tmp_path / "out").mkdir()
    denoise.main([*names, "-o", str(tmp_path / "out"), "--model", str(trained)])
    captured = capsys.readouterr()
    assert "4/4" in captured.err and len(list((tmp_path / "out").glob("*_denoised.wav"))) == 4
    assert captured.out.count(" -> ") == 4  # one line per file, printed beside the bar
