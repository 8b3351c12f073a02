"""Hostile inputs to denoise.py: each gives a correct result or a one-line error (exit 2, no traceback).

Whatever happens, the input is never changed (sha256 before and after) and nothing partial is left
behind: no output file and no temporary file in the folder. A correct result has the input's rate,
channel count and frame count, finite samples, no more energy than the input, and silence gives
exact silence.
"""
import hashlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import denoise
from audio import UserError
from checkpoint import load_model
from conftest import ROOT

RATES = (8000, 11025, 22050, 44100, 48000)


@pytest.fixture(scope="module", autouse=True)
def one_thread(trained):
    """The inputs here are tiny: torch's thread pool only adds overhead (a lot of it on a busy machine).
    Depends on `trained` so that the shared model is trained as it would be without this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def light_model(trained, tmp_path_factory):
    """The same model exported by export.py: what the light runtime (onnxruntime, no PyTorch) runs."""
    import export
    out = tmp_path_factory.mktemp("light") / "unet.onnx"
    export.main(["--model", str(trained), "--out", str(out)])
    return out


@pytest.fixture(scope="module", params=["torch", "light"])
def model_file(request, trained, light_model):
    """Every test of the matrix runs twice: on the checkpoint in PyTorch, and on its export in onnxruntime."""
    return trained if request.param == "torch" else light_model


@pytest.fixture(scope="module")
def model(model_file):
    from onnx_backend import OnnxDenoiser
    return OnnxDenoiser(model_file) if model_file.suffix == ".onnx" else load_model(model_file)


def tone(n, sr, channels=1, level=0.1, seed=0):
    """[n, channels] float32: a different harmonic tone in each channel plus hiss (soundfile's layout)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = [np.sin(2 * np.pi * (150 + 40 * c) * t) + 0.5 * np.sin(2 * np.pi * (450 + 80 * c) * t)
         + 0.3 * rng.standard_normal(n) for c in range(channels)]
    return (level * np.stack(x, axis=1)).astype(np.float32)


def wav_bytes(x, sr, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def snapshot(folder):
    """Every file and folder under folder, with the sha256 of each file."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in folder.rglob("*")}


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def check_result(inp, out, before):
    """out is a correct denoising of inp, and the folder holds what it held before plus out."""
    after = snapshot(inp.parent)
    assert set(after) == {*before, out.name} and {k: after[k] for k in before} == before
    a, b = sf.info(inp), sf.info(out)
    assert (b.samplerate, b.channels, b.frames) == (a.samplerate, a.channels, a.frames)
    x, _ = sf.read(inp, dtype="float32", always_2d=True)
    y, _ = sf.read(out, dtype="float32", always_2d=True)
    assert y.shape == (a.frames, a.channels) and np.all(np.isfinite(y))
    if not np.any(x):
        assert not np.any(y), "silence in must be exact silence out"
    for c in range(a.channels):  # subtraction only removes: no channel gets louder (beyond 8-bit rounding)
        assert rms(y[:, c]) <= 1.05 * rms(x[:, c]) + 2 ** -7
    return y


def run(*argv):
    denoise.main([str(a) for a in argv])


NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['denoise.py', *sys.argv[1:]]; "
            f"sys.path.insert(0, {str(ROOT)!r}); runpy.run_path({str(ROOT / 'denoise.py')!r}, run_name='__main__')")


def cli(cwd, *argv):
    """denoise.py as a user runs it; with an .onnx model, in a process where `import torch` fails (the light
    runtime, as installed from requirements-denoise.txt)."""
    light = any(str(a).endswith(".onnx") for a in argv)
    cmd = [sys.executable, *(("-c", NO_TORCH) if light else (str(ROOT / "denoise.py"),)), *map(str, argv)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_line_error(r, *parts):
    err = r.stderr.strip()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert err.startswith("error: ") and "\n" not in err, r.stderr
    for part in parts:
        assert part in err, err
    assert r.stdout == ""


# ----------------------------------------------------------------------------- one-line errors (the real script)
def _nan_at_the_end(p):
    x = tone(16000, 16000)
    x[-1] = np.nan  # found by the level scan before any output is written
    sf.write(p, x, 16000, subtype="FLOAT")


def _truncated_flac(p):
    buf = io.BytesIO()
    sf.write(buf, tone(16000, 16000), 16000, format="FLAC")
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # opens, then the decoder loses sync


UNREADABLE = {
    "empty file": ("in.wav", lambda p: p.write_bytes(b""), "cannot read audio from in.wav"),
    "text renamed .wav": ("in.wav", lambda p: p.write_text("not audio at all\n" * 20), "cannot read audio from in.wav"),
    "truncated header": ("in.wav", lambda p: p.write_bytes(wav_bytes(tone(1600, 16000), 16000)[:20]),
                         "cannot read audio from in.wav"),
    "zero frames": ("in.wav", lambda p: sf.write(p, np.zeros((0, 1), np.float32), 16000),
                    "in.wav holds no audio samples"),
    "all NaN": ("in.wav", lambda p: sf.write(p, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT"),
                "in.wav contains NaN or infinite samples"),
    "all Inf": ("in.wav", lambda p: sf.write(p, np.full((1600, 2), np.inf, np.float32), 16000, subtype="FLOAT"),
                "in.wav contains NaN or infinite samples"),
    "one NaN at the end": ("in.wav", _nan_at_the_end, "in.wav contains NaN or infinite samples"),
    "truncated FLAC": ("in.flac", _truncated_flac, "cannot read audio from in.flac"),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_unusable_input_is_a_one_line_error(model_file, tmp_path, case):
    name, make, message = UNREADABLE[case]
    make(tmp_path / name)
    before = snapshot(tmp_path)
    r = cli(tmp_path, name, "--model", model_file)
    assert_one_line_error(r, message)
    assert snapshot(tmp_path) == before  # input untouched, no output, no temp file


def test_float32_max_gives_a_result_or_a_one_line_error(model_file, tmp_path):
    """Samples at float32's largest value: the level gain is subnormal, and whether the model's arithmetic
    survives depends on its weights; either a correct result or a one-line error, never garbage."""
    x = np.full(4000, np.finfo(np.float32).max, np.float32)
    x[::2] *= -1
    sf.write(tmp_path / "in.wav", x, 16000, subtype="FLOAT")
    before = snapshot(tmp_path)
    r = cli(tmp_path, "in.wav", "--model", model_file)
    if r.returncode == 0:
        check_result(tmp_path / "in.wav", tmp_path / "in_denoised.wav", before)
    else:
        assert_one_line_error(r, "denoising in.wav gave NaN or infinite samples")
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("out", ["no such folder/out.wav", "no such folder/"])
def test_output_folder_that_does_not_exist(model_file, tmp_path, out):
    sf.write(tmp_path / "in.wav", tone(1600, 16000), 16000)
    before = snapshot(tmp_path)
    r = cli(tmp_path, "in.wav", "-o", out, "--model", model_file)
    assert_one_line_error(r, "output folder does not exist: no such folder")
    assert snapshot(tmp_path) == before


def test_unwritable_folder_is_a_user_error(model_file, tmp_path, monkeypatch):
    """What a read-only folder does for a user who is not root (CI runs as root, so chmod cannot show it):
    creating the temporary file is refused."""
    sf.write(tmp_path / "in.wav", tone(1600, 16000), 16000)
    before = snapshot(tmp_path)

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")
    import audio
    monkeypatch.setattr(audio, "open", refused, raising=False)  # shadows the builtin inside audio.py
    with pytest.raises(UserError, match=f"cannot write to {tmp_path}: Permission denied"):
        run(tmp_path / "in.wav", "--model", model_file)
    assert snapshot(tmp_path) == before


def test_spaces_and_devanagari_in_the_path(model_file, tmp_path):
    folder = tmp_path / "my files" / "हिन्दी रिकॉर्डिंग"
    folder.mkdir(parents=True)
    sf.write(folder / "नमस्ते दुनिया.wav", tone(8000, 16000, 2), 16000)
    before = snapshot(folder)
    r = cli(tmp_path, "my files/हिन्दी रिकॉर्डिंग/नमस्ते दुनिया.wav", "--model", model_file)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "नमस्ते दुनिया_denoised.wav" in r.stdout
    check_result(folder / "नमस्ते दुनिया.wav", folder / "नमस्ते दुनिया_denoised.wav", before)


# ----------------------------------------------------------------------------- correct results (through main)
def _write(p, x, sr, subtype=None, fmt=None):
    try:
        sf.write(p, x, sr, subtype=subtype, format=fmt)
    except Exception as e:  # MP3 writing needs libsndfile >= 1.1 built with LAME and mpg123
        pytest.skip(f"this soundfile/libsndfile cannot write {fmt or subtype}: {e}")


FORMATS = [  # (input name, subtype or None, format or None, output name, output subtype)
    ("u8.wav", "PCM_U8", None, "u8_denoised.wav", "PCM_U8"),
    ("s16.wav", "PCM_16", None, "s16_denoised.wav", "PCM_16"),
    ("s24.wav", "PCM_24", None, "s24_denoised.wav", "PCM_24"),
    ("f32.wav", "FLOAT", None, "f32_denoised.wav", "FLOAT"),
    ("in.flac", "PCM_16", None, "in_denoised.flac", "PCM_16"),
    ("in24.flac", "PCM_24", None, "in24_denoised.flac", "PCM_24"),
    ("in.ogg", "VORBIS", None, "in_denoised.wav", "FLOAT"),
    ("in.mp3", "MPEG_LAYER_III", "MP3", "in_denoised.wav", "FLOAT"),
]


@pytest.mark.parametrize("name,subtype,fmt,out_name,out_subtype", FORMATS, ids=[f[0] for f in FORMATS])
def test_formats(model_file, tmp_path, name, subtype, fmt, out_name, out_subtype):
    _write(tmp_path / name, tone(12345, 22050, 2), 22050, subtype, fmt)
    before = snapshot(tmp_path)
    run(tmp_path / name, "--model", model_file)
    check_result(tmp_path / name, tmp_path / out_name, before)
    assert sf.info(tmp_path / out_name).subtype == out_subtype


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_rates_and_channels(model_file, tmp_path, sr, channels):
    sf.write(tmp_path / "in.wav", tone(sr // 4 + 7, sr, channels), sr)
    before = snapshot(tmp_path)
    run(tmp_path / "in.wav", "--model", model_file)
    check_result(tmp_path / "in.wav", tmp_path / "in_denoised.wav", before)


def _square(n, sr, channels=1):
    return np.repeat(np.sign(np.sin(2 * np.pi * 220 * np.arange(n) / sr) + 1e-9)[:, None], channels, 1)


SIGNALS = {  # name: (samples [n, channels], rate, subtype)
    "10 ms at 16 kHz": (tone(160, 16000), 16000, "PCM_16"),
    "10 ms at 8 kHz, stereo": (tone(80, 8000, 2), 8000, "PCM_16"),
    "10 ms at 44.1 kHz": (tone(441, 44100), 44100, "FLOAT"),
    "1 sample": (tone(1, 16000), 16000, "FLOAT"),
    "silence, float": (np.zeros((16000, 1), np.float32), 16000, "FLOAT"),
    "silence, 16-bit stereo at 44.1 kHz": (np.zeros((20000, 2), np.float32), 44100, "PCM_16"),
    "silence, 8-bit": (np.zeros((4000, 1), np.float32), 8000, "PCM_U8"),
    "full-scale square, 16-bit": (_square(16000, 16000), 16000, "PCM_16"),
    "full-scale square, float, 6 channels": (_square(8000, 48000, 6), 48000, "FLOAT"),
    "overdriven square, float": (2.0 * _square(8000, 16000), 16000, "FLOAT"),
    "DC offset under a tone": (0.5 + tone(16000, 16000), 16000, "PCM_16"),
    "pure DC": (np.full((16000, 1), -0.7, np.float32), 16000, "FLOAT"),
    "very quiet (-140 dBFS)": (tone(8000, 16000, level=1e-7), 16000, "FLOAT"),
    "40 s at 48 kHz, stereo: four chunks": (tone(40 * 48000, 48000, 2), 48000, "PCM_16"),
}


@pytest.mark.parametrize("case", SIGNALS)
def test_hostile_signals_give_a_correct_result(model_file, tmp_path, case):
    x, sr, subtype = SIGNALS[case]
    sf.write(tmp_path / "in.wav", x, sr, subtype=subtype)
    before = snapshot(tmp_path)
    run(tmp_path / "in.wav", "--model", model_file)
    check_result(tmp_path / "in.wav", tmp_path / "in_denoised.wav", before)


# ----------------------------------------------------------------------------- failures while writing
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_in_the_middle_of_writing_leaves_nothing(model_file, tmp_path, monkeypatch, exc):
    """The second chunk fails: no temp file is left, and an existing output (--overwrite) keeps its old bytes."""
    sf.write(tmp_path / "in.wav", tone(16000, 16000), 16000)
    (tmp_path / "in_denoised.wav").write_bytes(b"the previous output")
    before = snapshot(tmp_path)
    real = denoise.denoise_stream

    def failing(*a, **k):
        pieces = real(*a, **k)
        yield next(pieces)
        raise exc("in the middle of writing")
    monkeypatch.setattr(denoise, "denoise_stream", failing)
    with pytest.raises(exc, match="in the middle of writing"):
        run(tmp_path / "in.wav", "--model", model_file, "--overwrite", "--chunk-seconds", "0.25")
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- properties (hypothesis)
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 30000), sr=st.sampled_from(RATES + (16000,)), channels=st.integers(1, 3),
       level_db=st.one_of(st.none(), st.floats(-140, 40)), seed=st.integers(0, 2 ** 32 - 1))
def test_any_length_rate_and_level(model, n, sr, channels, level_db, seed):
    """Same shape, finite, no louder than the input; silence (level None) gives exact zeros."""
    x = np.ascontiguousarray(tone(n, sr, channels, 0.0 if level_db is None else 10 ** (level_db / 20), seed).T)
    y = denoise.denoise_array(model, x, sr, chunk_seconds=0.5)
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    if level_db is None:
        assert not np.any(y)
    for c in range(channels):
        assert rms(y[c]) <= 1.05 * rms(x[c])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1000, 20000), sr=st.sampled_from(RATES), gain_db=st.floats(-60, 40), seed=st.integers(0, 1000))
def test_level_in_level_out(model, n, sr, gain_db, seed):
    """The level is normalised away: denoising k * x gives k times denoising x."""
    x = np.ascontiguousarray(tone(n, sr, 2, 0.1, seed).T)
    k = np.float32(10 ** (gain_db / 20))
    y, yk = denoise.denoise_array(model, x, sr), denoise.denoise_array(model, k * x, sr)
    assert np.max(np.abs(yk / k - y)) <= 1e-4 * np.max(np.abs(y))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 20000), sr=st.sampled_from(RATES), channels=st.sampled_from([1, 2, 6]),
       subtype=st.sampled_from(["PCM_U8", "PCM_16", "PCM_24", "FLOAT"]), chunk=st.floats(0.05, 2.0),
       level_db=st.floats(-60, 0))
def test_files_of_any_shape(model_file, n, sr, channels, subtype, chunk, level_db):
    """Through the file path with small chunks: the output always matches the input's shape and subtype."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.wav"
        sf.write(inp, tone(n, sr, channels, 10 ** (level_db / 20)), sr, subtype=subtype)
        before = snapshot(inp.parent)
        run(inp, "--model", model_file, "--chunk-seconds", chunk)
        check_result(inp, inp.with_name("in_denoised.wav"), before)
        assert sf.info(inp.with_name("in_denoised.wav")).subtype == subtype
