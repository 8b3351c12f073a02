"""pack_corpus.py: every file at its path, mono at the model's rate, CSVs renamed along, FLAC exact, Vorbis
close; prepare_data.py reads the pack as it reads the source."""
import csv

import numpy as np
import pytest
import soundfile as sf

import pack_corpus
import prepare_data
from audio import UserError, load_audio
from conftest import make_corpus, prepare_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    speech, noise = make_corpus(root, n_speakers=4, files_per_speaker=2)
    stereo = np.stack([np.sin(np.arange(44100) * 0.05), np.zeros(44100)], axis=1) * 0.3
    sf.write(noise / "hiss" / "stereo 44k.wav", stereo, 44100)  # another rate and two channels
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "speaker"]] + [[str(p.relative_to(root)), p.parent.name]
                                                          for p in sorted(speech.rglob("*.wav"))])
    return root


@pytest.mark.parametrize("fmt, suffix", [("flac", ".flac"), ("vorbis", ".ogg")])
def test_pack_keeps_paths_and_renames_the_csv(corpus, tmp_path, fmt, suffix):
    out = tmp_path / "pack"
    pack_corpus.main([str(corpus), "--include", "speech", "noise", "--out", str(out), "--format", fmt])
    sources = sorted(p.relative_to(corpus) for p in corpus.rglob("*.wav"))
    packed = sorted(p.relative_to(out) for p in out.rglob(f"*{suffix}"))
    assert packed == [p.with_suffix(suffix) for p in sources]
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert rows and all(r["file"].endswith(suffix) and (out / r["file"]).is_file() for r in rows)
    for rel in sources:
        ref, sr = load_audio(corpus / rel, 16000, mono=True)
        got, got_sr = sf.read(out / rel.with_suffix(suffix), dtype="float32", always_2d=True)
        assert got_sr == 16000 and got.shape[1] == 1
        err = ref[0][: len(got)] - got[: ref.shape[1], 0]
        if fmt == "flac":
            assert np.abs(err).max() <= 1 / 32768 + 1e-6  # 16-bit rounding only
        elif rel.parts[0] == "speech":  # lossy, but close in waveform on voiced sound
            assert 10 * np.log10(np.sum(ref ** 2) / np.sum(err ** 2)) > 10
        else:  # noise: a perceptual codec keeps its level and spectrum, not its waveform
            assert abs(10 * np.log10(np.sum(got ** 2) / np.sum(ref ** 2))) < 1


def test_prepare_data_reads_the_pack(corpus, tmp_path):
    out = tmp_path / "pack"
    pack_corpus.main([str(corpus), "--include", "speech", "noise", "--out", str(out), "--format", "flac"])
    prepared = tmp_path / "prepared"
    prepare_data.main(prepare_args(out / "speech", out / "noise", prepared))
    assert (prepared / "manifest.csv").is_file()
    assert any((prepared / "train" / "voice").iterdir())


def test_one_line_errors(corpus, tmp_path):
    with pytest.raises(UserError, match="no folder"):
        pack_corpus.main([str(corpus), "--include", "nothing here", "--out", str(tmp_path / "p")])
    (tmp_path / "p").mkdir()
    with pytest.raises(UserError, match="exists"):
        pack_corpus.main([str(corpus), "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit):
        pack_corpus.parse_args([str(corpus), "--out", "x", "--quality", "2"])
