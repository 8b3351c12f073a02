"""prepare_data.py: layout, exact sums, SNRs to 0.1 dB, splits by source, reproducibility, refusals."""
import csv
import hashlib
import http.server
import io
import json
import shutil
import socket
import threading
import zipfile

import numpy as np
import pytest
import soundfile as sf

import prepare_data
from audio import AudioConfig, UserError, load_png, snr_db, spectrogram_db
from conftest import prepare_args

KINDS = ("noisy_voice", "voice", "noise")


def rows(out):
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout_sums_and_snr(prepared):
    manifest = rows(prepared)
    assert {"id", "split", "speech_source", "noise_source", "noise_category", "snr_db"} <= set(manifest[0])
    assert {r["split"] for r in manifest} == {"train", "val", "test"}
    for r in manifest:
        files = {k: prepared / r["split"] / k / f"{r['id']}.wav" for k in KINDS}
        (noisy, sr), (voice, _), (noise, _) = (sf.read(files[k], dtype="float32") for k in KINDS)
        assert sr == 16000 and len(noisy) == 16000
        assert np.array_equal(noisy, voice + noise)
        assert snr_db(voice, noise) == pytest.approx(float(r["snr_db"]), abs=0.1)
        assert -5 <= float(r["snr_db"]) <= 15
        assert np.abs(noisy).max() <= 0.99
        for k in KINDS:
            assert (prepared / r["split"] / k / f"{r['id']}.png").exists()


def test_png_matches_wav(prepared):
    cfg = AudioConfig()
    r = rows(prepared)[0]
    x, _ = sf.read(prepared / r["split"] / "noisy_voice" / f"{r['id']}.wav", dtype="float32")
    png = load_png(prepared / r["split"] / "noisy_voice" / f"{r['id']}.png", cfg)
    assert png.shape == (256, 16000 // 128 + 1)
    assert np.abs(png - spectrogram_db(x, cfg)).max() < 0.01


def test_splits_disjoint_by_speaker_and_noise_recording(prepared):
    manifest = rows(prepared)
    for field in ("speaker", "speech_source", "noise_source"):
        sets = {s: {r[field] for r in manifest if r["split"] == s} for s in ("train", "val", "test")}
        assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"], field
    config = json.loads((prepared / "config.json").read_text())
    assert config["audio"]["sample_rate"] == 16000 and config["seed"] == 0


def test_reproducible_and_resumable(corpus, prepared, tmp_path):
    """Same seed: identical audio. A run interrupted (files deleted, manifest gone) completes to the same set.

    (Bytes can differ: libsndfile stamps float WAVs with the time in a PEAK chunk.)"""
    same = lambda a, b: np.array_equal(sf.read(a)[0], sf.read(b)[0])
    out = tmp_path / "again"
    prepare_data.main(prepare_args(*corpus, out))
    for r in rows(prepared):
        for k in KINDS:
            assert same(prepared / r["split"] / k / f"{r['id']}.wav", out / r["split"] / k / f"{r['id']}.wav")
            png = f"{r['split']}/{k}/{r['id']}.png"
            assert (prepared / png).read_bytes() == (out / png).read_bytes()
    assert (out / "manifest.csv").read_text() == (prepared / "manifest.csv").read_text()
    victim = out / "train" / "voice" / "train_00000.wav"
    victim.unlink()
    (out / "manifest.csv").unlink()
    prepare_data.main(prepare_args(*corpus, out))
    assert same(victim, prepared / "train" / "voice" / "train_00000.wav")
    assert (out / "manifest.csv").read_text() == (prepared / "manifest.csv").read_text()


def test_refuses_other_settings_without_overwrite(corpus, tmp_path):
    out = tmp_path / "p"
    prepare_data.main(prepare_args(*corpus, out))
    with pytest.raises(UserError, match="other settings.*snr_range"):
        prepare_data.main(prepare_args(*corpus, out, "--snr-range", "0", "5"))
    prepare_data.main(prepare_args(*corpus, out, "--snr-range", "0", "5", "--overwrite"))
    assert all(0 <= float(r["snr_db"]) <= 5 for r in rows(out))


def test_vad_drops_silent_chunks(tmp_path):
    speech = tmp_path / "speech" / "a"
    speech.mkdir(parents=True)
    x = np.zeros(16000 * 4, np.float32)
    x[:16000] = 0.3 * np.sin(np.arange(16000) * 0.2)  # one second of 'speech', three of silence
    sf.write(speech / "r.wav", x, 16000)
    args = prepare_data.parse_args(["--clip-seconds", "1"])
    assert prepare_data.speech_chunks(speech / "r.wav", args)[:2] == ([0], 4.0)


def test_bad_input_errors(tmp_path, corpus):
    with pytest.raises(UserError, match="not a folder"):
        prepare_data.main(["--speech-dir", str(tmp_path / "nope"), "--noise-dir", str(corpus[1])])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        prepare_data.main(["--speech-dir", str(tmp_path / "empty"), "--noise-dir", str(corpus[1])])
    with pytest.raises(SystemExit):
        prepare_data.parse_args(["--snr-range", "10", "0"])


# ----------------------------------------------------------------------------- real-corpus layouts
def make_esc50(root, rng, per_fold=2):
    """A miniature ESC-50: audio/<fold>-<id>-<take>-<target>.wav and meta/esc50.csv."""
    from conftest import noise_clip
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for k in range(per_fold):
            cat, target = (("rain", 10), ("dog", 0))[k % 2]
            name = f"{fold}-{100 + k}-A-{target}.wav"
            x = np.zeros(16000 * 5, np.float32)
            x[: 16000 * 3] = noise_clip("hiss" if cat == "rain" else "band", 3.0, 16000, rng)  # zero-padded, as ESC-50 is
            sf.write(root / "audio" / name, x, 16000)
            lines.append(f"{name},{fold},{target},{cat},False,{100 + k},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")


def test_esc50_folds_and_categories(corpus, tmp_path):
    esc = tmp_path / "ESC-50"
    make_esc50(esc, np.random.default_rng(0))
    out = tmp_path / "p"
    prepare_data.main(prepare_args(corpus[0], esc, out, "--exclude-categories", "dog"))
    manifest = rows(out)
    assert {r["noise_category"] for r in manifest} == {"rain"}
    folds = {s: {int(r["noise_source"].split("/")[-1][0]) for r in manifest if r["split"] == s} for s in ("train", "val", "test")}
    assert folds["test"] == {5} and folds["val"] == {4} and folds["train"] <= {1, 2, 3}
    for r in manifest:  # ESC-50's zero padding is never used as noise
        noise, _ = sf.read(out / r["split"] / "noise" / f"{r['id']}.wav")
        assert np.sqrt(np.mean(noise[:1600] ** 2)) > 1e-4 and np.sqrt(np.mean(noise[-1600:] ** 2)) > 1e-4
    with pytest.raises(UserError, match="no noise of categories"):
        prepare_data.main(prepare_args(corpus[0], esc, tmp_path / "q", "--noise-categories", "siren"))


def test_speakers_from_labels_or_names(tmp_path, corpus):
    from conftest import voiced
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    lines = ["file,speaker"]
    for spk in ("ravi", "sita", "amar", "uma"):
        for k in range(2):
            sf.write(flat / f"{spk}_{k}.wav", voiced(2.0, 16000, 150, rng), 16000)
            lines.append(f"flat/{spk}_{k}.wav,{spk}")
    (tmp_path / "speakers.csv").write_text("\n".join(lines) + "\n")
    for extra in (["--speech-labels", str(tmp_path / "speakers.csv")], ["--speaker-regex", "^([a-z]+)_"]):
        out = tmp_path / extra[0].strip("-")
        prepare_data.main(prepare_args(flat, corpus[1], out, *extra))
        manifest = rows(out)
        assert {r["speaker"] for r in manifest} == {"ravi", "sita", "amar", "uma"}
        by_split = {s: {r["speaker"] for r in manifest if r["split"] == s} for s in ("train", "val", "test")}
        assert all(by_split.values()) and not by_split["train"] & (by_split["val"] | by_split["test"])


def test_unreadable_and_ffmpeg_only_files_are_skipped_with_a_warning(tmp_path, corpus, capsys, monkeypatch):
    speech = tmp_path / "speech"
    shutil.copytree(corpus[0], speech)
    (speech / "spk0" / "broken.wav").write_bytes(b"RIFF\x00\x00")
    (speech / "spk0" / "phone.3gp").write_bytes(b"\x00" * 100)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # as on a machine without ffmpeg
    prepare_data.main(prepare_args(speech, corpus[1], tmp_path / "p"))
    printed = capsys.readouterr().out
    assert "skipping 1 .3gp speech files: ffmpeg is not on the PATH" in printed
    assert "skipped 1 unreadable files" in printed and "broken.wav" in printed
    assert len(rows(tmp_path / "p")) == len(rows_of_corpus(corpus, tmp_path))


def rows_of_corpus(corpus, tmp_path):
    out = tmp_path / "reference"
    prepare_data.main(prepare_args(*corpus, out))
    return rows(out)


# ----------------------------------------------------------------------------- ESC-50 download (loopback only)
class _Archive(http.server.BaseHTTPRequestHandler):
    data = b""
    cut_after = None      # bytes to send before dropping the connection (once)
    ranges = True         # whether Range requests are honoured

    def do_GET(self):
        start = 0
        if self.ranges and self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        body = self.data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None:
            self.wfile.write(body[: type(self).cut_after])
            type(self).cut_after = None
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def esc50_server(tmp_path):
    src = tmp_path / "src" / "ESC-50-master"
    make_esc50(src, np.random.default_rng(1), per_fold=1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src.parent).as_posix())
    handler = type("Handler", (_Archive,), {"data": buf.getvalue()})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_port}/master.zip"
    server.shutdown()


@pytest.mark.parametrize("ranges", [True, False])
def test_download_esc50_resumes_or_restarts(esc50_server, tmp_path, ranges):
    handler, url = esc50_server
    handler.ranges, handler.cut_after = ranges, len(handler.data) // 3
    dest = tmp_path / "esc50"
    with pytest.raises(UserError, match="run again to resume"):
        prepare_data.download_esc50(dest, url)
    assert (dest / "ESC-50.zip.part").stat().st_size < len(handler.data)
    assert prepare_data.esc50_meta(dest) is None  # a partial download never looks complete
    prepare_data.download_esc50(dest, url, sha256=hashlib.sha256(handler.data).hexdigest())
    meta = prepare_data.esc50_meta(dest)
    assert len(meta) == 5 and all(f.exists() for f in meta)
    assert sorted(p.name for p in dest.iterdir()) == ["audio", "meta"]


def test_download_esc50_rejects_a_bad_archive(esc50_server, tmp_path):
    handler, url = esc50_server
    with pytest.raises(UserError, match="expected 00"):
        prepare_data.download_esc50(tmp_path / "e", url, sha256="00" * 32)
    assert not (tmp_path / "e" / "ESC-50.zip.part").exists() and prepare_data.esc50_meta(tmp_path / "e") is None
    with pytest.raises(UserError, match="downloading .* failed"):
        prepare_data.download_esc50(tmp_path / "f", "http://127.0.0.1:9/none.zip")


def test_several_noise_folders_mix_esc50_folds_and_categories(corpus, tmp_path):
    esc = tmp_path / "ESC-50"
    make_esc50(esc, np.random.default_rng(0))
    out = tmp_path / "p"
    args = prepare_args(corpus[0], esc, out)
    args.insert(args.index(str(esc)) + 1, str(corpus[1]))  # --noise-dir ESC-50 noise
    prepare_data.main(args)
    manifest = rows(out)
    sources = {r["noise_source"].split("/")[0] for r in manifest}
    assert sources == {"ESC-50", "noise"}  # names carry their folder when there are several
    assert {r["noise_category"] for r in manifest} >= {"rain", "dog", "hiss", "band"} - {""}
    for r in manifest:
        if r["noise_source"].startswith("ESC-50/") and r["split"] == "test":
            assert r["noise_source"].split("/")[-1].startswith("5-")


def test_killed_run_completes_to_the_same_set(corpus, prepared, tmp_path):
    """SIGKILL prepare_data.py in the middle of mixing; the next run gives exactly the uninterrupted set."""
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "prepare_data.py"), *prepare_args(*corpus, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("*/voice/*.png"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.csv").exists()  # an interrupted set never looks finished
    prepare_data.main(prepare_args(*corpus, out))
    assert (out / "manifest.csv").read_text() == (prepared / "manifest.csv").read_text()
    for r in rows(prepared):
        for k in KINDS:
            a, b = (d / r["split"] / k / f"{r['id']}.wav" for d in (prepared, out))
            assert np.array_equal(sf.read(a)[0], sf.read(b)[0])
    assert not list(out.rglob("*.tmp"))


def source_audio_hashes(out, corpus_roots):
    """{split: set of content hashes of the speech recordings its mixtures were cut from}."""
    found = {}
    for r in rows(out):
        name = r["speech_source"]
        root = next(root for root in corpus_roots if (root / name).exists() or (root.parent / name).exists())
        path = root / name if (root / name).exists() else root.parent / name
        x, _ = sf.read(path, dtype="float32")
        found.setdefault(r["split"], set()).add(prepare_data.content_hash(x))
    return found


def test_copies_under_other_names_never_cross_splits(tmp_path, capsys):
    """The same recording under another name, speaker folder and format is used once, so no split shares audio
    with another; a noise recording that repeats another is dropped too."""
    from conftest import make_corpus
    speech, noise = make_corpus(tmp_path, n_speakers=6, files_per_speaker=2)
    copies = [(speech / "spk0" / "utt0.wav", speech / "spk5" / "again.wav"),
              (speech / "spk1" / "utt1.wav", speech / "spk3" / "other_name.flac"),
              (speech / "spk2" / "utt0.wav", speech / "spk4" / "utt9.wav")]
    for src, dst in copies:
        x, sr = sf.read(src, dtype="float32")
        sf.write(dst, x, sr, subtype="PCM_16" if dst.suffix == ".flac" else "FLOAT")
    x, sr = sf.read(noise / "hiss" / "hiss0.wav", dtype="float32")
    sf.write(noise / "band" / "hiss0_copy.wav", np.concatenate([np.zeros(800, np.float32), x]), sr)  # padded copy
    out = tmp_path / "out"
    prepare_data.main(prepare_args(speech, noise, out, "--val-fraction", "0.2", "--test-fraction", "0.2"))
    said = capsys.readouterr().out
    assert "speech: 3 recordings repeat another's audio" in said and "noise: 1 recordings repeat" in said
    manifest = rows(out)
    used = {r["speech_source"] for r in manifest} | {r["noise_source"] for r in manifest}
    pairs = [[p.relative_to(speech).as_posix() for p in pair] for pair in copies] + [["hiss/hiss0.wav", "band/hiss0_copy.wav"]]
    assert not [pair for pair in pairs if set(pair) <= used]  # one copy of each kept
    assert "spk0/utt0.wav" in used and "spk5/again.wav" not in used  # the first by path
    hashes = source_audio_hashes(out, [speech])
    assert set(hashes) == {"train", "val", "test"}
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"] and not hashes["val"] & hashes["test"]


def test_one_voice_corpus_split_by_recording_beside_a_many_speaker_corpus(tmp_path):
    """A corpus of one voice stays in every split (split by recording), one of many is split by speaker; each
    corpus gets its name in the manifest and its figures in summary.json."""
    from conftest import make_corpus, voiced
    _, noise = make_corpus(tmp_path / "many", n_speakers=6, files_per_speaker=2)
    many = tmp_path / "many" / "speech"
    one = tmp_path / "one_voice"
    one.mkdir()
    rng = np.random.default_rng(1)
    for i in range(10):
        sf.write(one / f"sentence{i}.wav", voiced(3.0, 16000, 120, rng), 16000)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,speaker\n" + "".join(f"one_voice/sentence{i}.wav,hindi_voice\n" for i in range(10))
                      + "".join(f"many/speech/spk{s}/utt{u}.wav,spk{s}\n" for s in range(6) for u in range(2)))
    out = tmp_path / "out"
    prepare_data.main(prepare_args(many, noise, out, "--speech-dir", str(one), str(many), "--speech-labels",
                                   str(labels), "--val-fraction", "0.2", "--test-fraction", "0.2"))
    manifest = rows(out)
    assert {r["corpus"] for r in manifest} == {"one_voice", "speech"}
    voice = [r for r in manifest if r["corpus"] == "one_voice"]
    assert {r["split"] for r in voice} == {"train", "val", "test"} and {r["speaker"] for r in voice} == {"hindi_voice"}
    for field in ("speech_source",):  # recordings of the one voice never in two splits
        sets = {s: {r[field] for r in voice if r["split"] == s} for s in ("train", "val", "test")}
        assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    others = [r for r in manifest if r["corpus"] == "speech"]
    spk = {s: {r["speaker"] for r in others if r["split"] == s} for s in ("train", "val", "test")}
    assert all(spk.values()) and not spk["train"] & spk["val"] and not spk["train"] & spk["test"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["corpora"]["one_voice"]["n_speakers"] == 1
    assert summary["train"]["n_speech_files"] == len({r["speech_source"] for r in manifest if r["split"] == "train"})
    assert summary["train"]["speech_minutes"] == pytest.approx(
        sum(3.0 for r in {r["speech_source"] for r in manifest if r["split"] == "train"}) / 60, abs=0.01)


def test_a_recording_shorter_than_a_clip_is_one_padded_chunk(tmp_path):
    """Many utterances are 2-4 s: one shorter than a clip (and at least --min-recording-seconds) is one chunk,
    judged on its own length and padded with silence; a shorter or silent one is dropped."""
    speech = tmp_path / "speech" / "a"
    speech.mkdir(parents=True)
    tone = lambda seconds: (0.3 * np.sin(np.arange(int(16000 * seconds)) * 0.2)).astype(np.float32)
    sf.write(speech / "short.wav", tone(2.5), 16000)
    sf.write(speech / "tiny.wav", tone(0.6), 16000)
    sf.write(speech / "silent.wav", np.zeros(16000 * 2, np.float32), 16000)
    args = prepare_data.parse_args(["--clip-seconds", "4"])
    assert prepare_data.speech_chunks(speech / "short.wav", args)[:2] == ([0], 2.5)
    assert prepare_data.speech_chunks(speech / "tiny.wav", args)[0] == []
    assert prepare_data.speech_chunks(speech / "silent.wav", args)[0] == []
    args = prepare_data.parse_args(["--clip-seconds", "4", "--min-recording-seconds", "0.5"])
    assert prepare_data.speech_chunks(speech / "tiny.wav", args)[0] == [0]


def test_several_labelled_folders_in_one_run_keep_each_corpus_split(tmp_path):
    """Two labelled folders, each with its own CSV: every top-level subfolder is a corpus, each split by speaker
    with a stream of its own, so adding a folder leaves the other corpora's splits as they were."""
    from conftest import make_corpus, voiced
    _, noise = make_corpus(tmp_path / "base", n_speakers=1)
    rng = np.random.default_rng(3)
    folders = {}
    for folder, corpora in (("one", ("alpha", "beta")), ("two", ("gamma",))):
        lines = ["file,speaker"]
        for corpus in corpora:
            for s in range(4):
                d = tmp_path / folder / corpus / f"reader{s}"
                d.mkdir(parents=True)
                for u in range(2):
                    sf.write(d / f"u{u}.wav", voiced(2.0, 16000, 110 + 20 * s, rng), 16000)
                    lines.append(f"{corpus}/reader{s}/u{u}.wav,{corpus}{s}")
        (tmp_path / folder / "labels.csv").write_text("\n".join(lines) + "\n")
        folders[folder] = tmp_path / folder
    one = ["--speech-labels", str(folders["one"] / "labels.csv")]
    both = ["--speech-dir", str(folders["one"]), str(folders["two"]), "--speech-labels",
            str(folders["one"] / "labels.csv"), str(folders["two"] / "labels.csv")]
    prepare_data.main(prepare_args(folders["one"], noise, tmp_path / "p1", *one))
    prepare_data.main(prepare_args(folders["one"], noise, tmp_path / "p2", *both))
    first, second = rows(tmp_path / "p1"), rows(tmp_path / "p2")
    assert {r["corpus"] for r in second} == {"alpha", "beta", "gamma"}
    assert {r["speaker"] for r in second if r["corpus"] == "gamma"} == {f"gamma{s}" for s in range(4)}
    split_of = lambda rs: {(r["speaker"], r["split"]) for r in rs if r["corpus"] != "gamma"}
    assert split_of(first) == split_of(second)
    for corpus in ("alpha", "beta", "gamma"):
        by_split = {s: {r["speaker"] for r in second if r["corpus"] == corpus and r["split"] == s} for s in ("train", "val")}
        assert by_split["train"] and not by_split["train"] & by_split["val"]
