"""web/: the page in headless Chromium gives denoise.py's output, keeps rate, channels and length, says what is
wrong with a bad file or a missing model, and asks for nothing beyond its own server.

Needs Chromium, chromedriver, selenium and onnxruntime-web (bash web/build.sh, run here when npm is there). Without
them the tests are skipped, unless REQUIRE_BROWSER_TESTS=1 (CI sets it): then they fail.
"""
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import browser
from audio import UserError, si_sdr
from conftest import ROOT, SR, noise_clip, voiced


@pytest.fixture(scope="module")
def server():
    if not (ROOT / "web" / "node_modules" / "onnxruntime-web").is_dir() and subprocess.run(
            ["bash", "-c", "command -v npm"], capture_output=True).returncode == 0:
        subprocess.run(["bash", str(ROOT / "web" / "build.sh")], check=True, capture_output=True)
    absent = browser.missing()
    if absent:
        message = "the browser tests need " + ", ".join(absent)
        if os.environ.get("REQUIRE_BROWSER_TESTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    s = browser.Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def page(server):
    p = browser.Page(server)
    assert p.state == "true", p.text("error")
    yield p
    p.close()


def wav_bytes(audio, sr, subtype="FLOAT"):
    buf = io.BytesIO()
    sf.write(buf, audio.T if audio.ndim == 2 else audio, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def noisy_speech(seconds, sr, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    out = [voiced(seconds, sr, 120 + 40 * c, rng) + 0.4 * noise_clip("band", seconds, sr, rng) for c in range(channels)]
    return np.stack(out).astype(np.float32)


def agreement_db(got, expected):
    return si_sdr(torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64), eps=0)


def denoise_py(tmp_path, audio, sr, subtype="FLOAT"):
    """denoise.py --backend onnx on the same file: (its output [channels, n], rate)."""
    inp, out = tmp_path / "in.wav", tmp_path / "in_py.wav"
    inp.write_bytes(wav_bytes(audio, sr, subtype))
    subprocess.run([sys.executable, str(ROOT / "denoise.py"), str(inp), "-o", str(out), "--backend", "onnx"],
                   check=True, capture_output=True, cwd=ROOT)
    y, rate = sf.read(out, dtype="float32", always_2d=True)
    return y.T, rate


def test_the_page_gives_denoise_py_output(page, tmp_path):
    """A noisy 16 kHz mono file (longer than a chunk, so that the chunks and their context count too)."""
    x = noisy_speech(13.0, SR)
    y, rate = sf.read(io.BytesIO(page.denoise(wav_bytes(x, SR))), dtype="float32", always_2d=True)
    expected, _ = denoise_py(tmp_path, x, SR)
    assert rate == SR and y.T.shape == x.shape
    assert agreement_db(y.T, expected).min() > 60
    assert agreement_db(y.T, x).max() < 30  # it did change the audio


def test_44k_stereo_comes_back_44k_stereo_at_the_same_length(page, tmp_path):
    x = noisy_speech(3.1, 44100, channels=2, seed=1)
    y, rate = sf.read(io.BytesIO(page.denoise(wav_bytes(x, 44100, "PCM_16"))), dtype="float32", always_2d=True)
    assert rate == 44100 and y.T.shape == x.shape
    expected, _ = denoise_py(tmp_path, x, 44100, "PCM_16")  # soxr there, the page's own sinc here: close, not equal
    assert agreement_db(y.T, expected).min() > 25


def test_the_floor_changes_the_output(page):
    x = noisy_speech(2.0, SR, seed=2)[0]
    deep, shallow = (sf.read(io.BytesIO(page.denoise(wav_bytes(x, SR), f)), dtype="float32")[0] for f in (-60, -6))
    assert agreement_db(shallow, x) > agreement_db(deep, x) + 3  # more of the input kept


def test_bad_files_get_a_message_not_a_download(page, tmp_path):
    with pytest.raises(UserError, match="cannot decode"):
        page.denoise(b"this is not audio, just text" * 40)
    with pytest.raises(UserError, match="empty"):
        page.denoise(b"")
    with pytest.raises(UserError, match="silent"):
        page.denoise(wav_bytes(np.zeros(SR, np.float32), SR))
    text = tmp_path / "notes.txt"  # through the page's own file chooser
    text.write_text("not audio\n" * 100)
    page.driver.find_element("id", "file").send_keys(str(text))
    end = time.time() + 30
    while not page.text("error") and time.time() < end:
        time.sleep(0.1)
    assert "cannot decode" in page.text("error")
    assert page.driver.find_element("id", "download").get_attribute("aria-disabled") == "true"


def test_the_page_in_use(page, tmp_path):
    """A file through the file chooser: players, spectrograms, an enabled download; then the floor slider re-runs it."""
    inp = tmp_path / "talk.wav"
    inp.write_bytes(wav_bytes(noisy_speech(4.0, 22050, seed=3), 22050, "PCM_16"))
    page.driver.find_element("id", "file").send_keys(str(inp))
    wait_for_status(page, "Done")
    download = page.driver.find_element("id", "download")
    assert download.get_attribute("aria-disabled") == "false" and download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download") == "talk_denoised.wav"
    widths = [page.driver.execute_script(f"return document.getElementById('spec{k}').width") for k in range(3)]
    assert all(w > 100 for w in widths)
    page.driver.execute_script("const f = document.getElementById('floor'); f.value = -12;"
                               "f.dispatchEvent(new Event('change'));")
    wait_for_status(page, "floor -12 dB")


def wait_for_status(page, text, timeout=120):
    end = time.time() + timeout
    while text not in page.text("status") and not page.text("error") and time.time() < end:
        time.sleep(0.1)
    assert text in page.text("status"), page.text("error")


def test_a_model_that_fails_to_load_says_so(server):
    for query, says in (("?model=../models/missing.onnx", "could not be loaded"),
                        ("?model=https://example.com/unet.onnx", "own server")):
        p = browser.Page(server, query)
        try:
            assert p.state == "failed" and says in p.text("error")
            assert p.driver.find_element("id", "file").get_attribute("disabled")
        finally:
            p.close()


def test_nothing_is_requested_beyond_the_pages_own_server(page, server):
    """Run last in this module: every request of every test above went to 127.0.0.1 (or stayed in the page)."""
    urls = page.requested_urls()
    assert any(u.endswith("/models/unet.onnx") for u in urls)
    outside = [u for u in urls if not u.startswith((server.url + "/", "blob:", "data:"))]
    assert not outside
