"""evaluate.py: the numbers mean what they say, every file is accounted for, mistakes give one-line errors."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import evaluate
from audio import UserError, mix, si_sdr
from conftest import ROOT, voiced
from dataset import read_manifest


@pytest.fixture(autouse=True, scope="module")
def keep_torch_threads():
    """--threads sets torch's thread count for the whole process: give the other test files theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# One torch thread: with two on a 2-core machine that is also training, OpenMP waits made the tiny model 30x slower.
@pytest.fixture(scope="module")
def split_run(prepared, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "results.json"
    results = evaluate.main(["--split", "test", "--data-dir", str(prepared), "--model", str(trained),
                             "--out", str(out), "--workers", "2", "--threads", "1"])
    return results, out


def test_split_accounts_for_every_file(split_run, prepared):
    results, out = split_run
    n = len(read_manifest(prepared, "test"))
    assert results["n_files"] == len(results["per_file"]) == n
    assert json.loads(out.read_text())["n_files"] == n and out.with_suffix(".png").stat().st_size > 10000
    assert results["settings"]["snr_binning"] == "nearest 5 dB"  # the prepared set's SNRs are continuous
    for s in evaluate.SYSTEMS:
        system = results["systems"][s]
        assert system["summary"]["si_sdr"]["n"] == n
        assert sum(g["si_sdr_i"]["n"] for g in system["by_snr"].values()) == n
        assert sum(g["si_sdr_i"]["n"] for g in system["by_category"].values()) == n
    assert all(g.endswith(" dB") and float(g.split()[0]) % 5 == 0 for g in results["systems"]["noisy"]["by_snr"])
    assert set(results["systems"]["noisy"]["by_category"]) <= {"hiss", "band"}
    assert results["model"]["code_version"] and results["model"]["model_args"]["depth"] == 2
    assert results["speed"]["unet"]["rtf"] > 0 and results["speed"]["unet"]["threads"] == 1


def test_noisy_system_is_the_reference_point(split_run, prepared):
    results, _ = split_run
    for f in results["per_file"]:  # SI-SDRi is each system's SI-SDR over the noisy input's, file by file
        for s in ("unet", "wiener"):
            assert f[s]["si_sdr_i"] == pytest.approx(f[s]["si_sdr"] - f["noisy"]["si_sdr"], abs=1e-6)
    summary = results["systems"]["unet"]["summary"]
    assert summary["si_sdr_i"]["mean"] == pytest.approx(
        summary["si_sdr"]["mean"] - results["systems"]["noisy"]["summary"]["si_sdr"]["mean"], abs=1e-6)
    f = results["per_file"][0]
    x = torch.from_numpy(sf.read(prepared / "test" / "noisy_voice" / f"{f['id']}.wav", dtype="float32")[0])
    c = torch.from_numpy(sf.read(prepared / "test" / "voice" / f"{f['id']}.wav", dtype="float32")[0])
    assert f["noisy"]["si_sdr"] == pytest.approx(si_sdr(x, c).item(), abs=1e-4)
    assert 1 <= f["noisy"]["pesq_wb"] <= 4.7 and 0 < f["noisy"]["stoi"] <= 1


def test_trained_model_improves_si_sdr(split_run):
    results, _ = split_run
    unet = results["systems"]["unet"]["summary"]
    assert unet["si_sdr_i"]["mean"] > 1.0  # dB; the tiny model gets a few
    assert unet["si_sdr"]["mean"] > results["systems"]["noisy"]["summary"]["si_sdr"]["mean"]


def test_wiener_improves_stationary_white_noise():
    rng = np.random.default_rng(0)
    voice = voiced(3.0, 16000, 130, rng)
    noisy, voice, _ = mix(voice, rng.standard_normal(len(voice)).astype(np.float32), 5.0, -25.0)
    out = evaluate.wiener(noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32
    before = si_sdr(torch.from_numpy(noisy), torch.from_numpy(voice)).item()
    assert si_sdr(torch.from_numpy(out), torch.from_numpy(voice)).item() > before + 3.0


def make_folder_set(prepared, root, n=3):
    """A devtest-style set (noisy/, clean/, manifest.csv beside them) from the prepared test split."""
    rows = read_manifest(prepared, "test")[:n]
    (root / "noisy").mkdir()
    (root / "clean").mkdir()
    for i, r in enumerate(rows):
        shutil.copy(prepared / "test" / "noisy_voice" / f"{r['id']}.wav", root / "noisy" / f"{i:03d}.wav")
        shutil.copy(prepared / "test" / "voice" / f"{r['id']}.wav", root / "clean" / f"{i:03d}.wav")
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "speech_source_file", "noise_source_file", "noise_category", "snr_db", "seconds"])
        w.writerows([f"{i:03d}", "s.wav", "n.wav", r["noise_category"], 5 * (i % 2), 1.0] for i, r in enumerate(rows))
    return rows


def test_folders_report_unpaired_and_short_files(prepared, trained, tmp_path, capsys):
    make_folder_set(prepared, tmp_path)
    sf.write(tmp_path / "noisy" / "extra.wav", np.zeros(8000, np.float32), 16000)  # no clean partner
    sf.write(tmp_path / "clean" / "lonely.flac", np.zeros(8000, np.float32), 16000)  # no noisy partner
    clean, sr = sf.read(tmp_path / "clean" / "001.wav", dtype="float32")
    sf.write(tmp_path / "clean" / "001.wav", clean[:-1000], sr, subtype="FLOAT")  # a length mismatch
    out = tmp_path / "res.json"
    results = evaluate.main(["--noisy", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"), "--model",
                             str(trained), "--out", str(out), "--workers", "1", "--threads", "1",
                             "--save-dir", str(tmp_path / "saved")])
    err = capsys.readouterr().err
    assert "1 noisy files without a clean file" in err and "extra" in err and "lonely" in err
    saved = json.loads(out.read_text())
    assert saved["warnings"]["noisy_without_clean"] == ["extra"]
    assert saved["warnings"]["clean_without_noisy"] == ["lonely"]
    assert saved["warnings"]["length_mismatch"] == ["001"] and saved["n_files"] == 3
    assert saved["settings"]["manifest"] == str(tmp_path / "manifest.csv")  # found beside the folders
    assert saved["settings"]["snr_binning"] == "as given"
    assert {k: v["si_sdr_i"]["n"] for k, v in saved["systems"]["unet"]["by_snr"].items()} == {"0 dB": 2, "5 dB": 1}
    f = next(f for f in results["per_file"] if f["id"] == "001")
    assert f["seconds"] == pytest.approx((len(clean) - 1000) / 16000)
    assert out.with_suffix(".png").exists()
    for s in ("unet", "wiener"):
        assert sf.info(tmp_path / "saved" / s / "001.wav").frames == len(clean) - (1000 if s == "wiener" else 0)


def test_mistakes_are_user_errors(prepared, trained, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sf.write(tmp_path / "a" / "x.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(UserError, match="no audio files"):
        evaluate.main(["--noisy", str(tmp_path / "a"), "--clean", str(tmp_path / "b"), "--model", str(trained)])
    sf.write(tmp_path / "b" / "y.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(UserError, match="no file in .* has a partner"):
        evaluate.main(["--noisy", str(tmp_path / "a"), "--clean", str(tmp_path / "b"), "--model", str(trained)])
    with pytest.raises(UserError, match="no model at"):
        evaluate.main(["--split", "test", "--data-dir", str(prepared), "--model", str(tmp_path / "none.pt")])
    with pytest.raises(UserError, match="no prepared set"):
        evaluate.main(["--data-dir", str(tmp_path / "nowhere"), "--model", str(trained)])
    r = subprocess.run([sys.executable, "evaluate.py", "--noisy", str(tmp_path / "missing"), "--clean", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip() == f"error: no such folder: {tmp_path / 'missing'}"


def report_page(folder):
    """The report's HTML, after checking that every file it points to is in its folder."""
    import re
    page = (folder / "index.html").read_text()
    for src in re.findall(r"src='([^']+)'", page):
        assert (folder / src).is_file(), src
    return page


def test_real_recordings_without_references_get_dnsmos_and_a_listening_report(prepared, trained, tmp_path):
    from speechmos import dnsmos
    make_folder_set(prepared, tmp_path)
    shutil.rmtree(tmp_path / "clean")  # real recordings: no clean twin
    out = tmp_path / "real.json"
    evaluate.main(["--noisy", str(tmp_path / "noisy"), "--model", str(trained), "--out", str(out),
                   "--workers", "1", "--threads", "1"])
    saved = json.loads(out.read_text())
    assert saved["settings"]["metrics"] == ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"] and saved["n_files"] == 3
    for s in evaluate.SYSTEMS:
        for m in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
            stat = saved["systems"][s]["summary"][m]
            assert stat["n"] == 3 and 1 <= stat["mean"] <= 5 and stat["ci95"] > 0
    first = next(f for f in saved["per_file"] if f["id"] == "000")
    x, _ = sf.read(tmp_path / "noisy" / "000.wav", dtype="float32")
    assert first["noisy"]["dnsmos_ovrl"] == pytest.approx(float(dnsmos.run(np.clip(x, -1, 1), 16000)["ovrl_mos"]))
    page = report_page(tmp_path / "real_report")
    assert page.count("<audio") == 6 and "clean" not in page.split("<h2>")[1]  # input and output per file
    shown = [f["id"] for f in sorted(saved["per_file"], key=lambda f: f["unet"]["dnsmos_ovrl"])]
    assert [page.index(f"<h3>{i}</h3>") for i in shown] == sorted(page.index(f"<h3>{i}</h3>") for i in shown)


def test_dnsmos_joins_the_reference_metrics(prepared, trained, tmp_path):
    make_folder_set(prepared, tmp_path)
    out = tmp_path / "both.json"
    evaluate.main(["--noisy", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"), "--model", str(trained),
                   "--out", str(out), "--workers", "2", "--threads", "1", "--dnsmos", "--report-files", "2"])
    saved = json.loads(out.read_text())
    assert {"pesq_wb", "stoi", "si_sdr_i", "dnsmos_ovrl"} <= set(saved["systems"]["unet"]["summary"])
    page = report_page(tmp_path / "both_report")
    assert page.count("<audio") == 6 and "DNSMOS OVRL" in page and "PESQ-WB" in page  # input, output, clean x 2


def test_tune_floor_writes_a_new_checkpoint_and_leaves_the_model_alone(prepared, trained, tmp_path):
    import hashlib
    before = hashlib.sha256(trained.read_bytes()).hexdigest()
    out = tmp_path / "tuned.pt"
    table = evaluate.main(["--data-dir", str(prepared), "--model", str(trained), "--tune-floor", "-20", "-60",
                           "--out", str(out), "--workers", "1", "--threads", "1"])
    assert hashlib.sha256(trained.read_bytes()).hexdigest() == before  # byte-identical
    tuned = torch.load(out, weights_only=True)
    assert tuned["model_args"]["floor_db"] == max(table, key=lambda db: table[db]["pesq_wb"])
    assert tuned["floor_tuning"]["split"] == "val"  # the validation split by default
    original = torch.load(trained, weights_only=True)
    assert tuned["model"].keys() == original["model"].keys()
    assert all(torch.equal(tuned["model"][k], v) for k, v in original["model"].items())  # the same weights
    assert tuned["trained_floor_db"] == original["model_args"]["floor_db"] and tuned["history"] == original["history"]
    with pytest.raises(UserError, match="exists or is the model read"):
        evaluate.main(["--data-dir", str(prepared), "--model", str(trained), "--tune-floor", "-60", "--out", str(out)])
