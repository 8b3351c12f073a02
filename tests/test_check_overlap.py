"""check_overlap.py: a cut, scaled copy of a training file is found under any name; unrelated audio is not."""
import numpy as np
import pytest
import soundfile as sf

import check_overlap
from conftest import SR, noise_clip, voiced


def test_finds_a_cut_and_scaled_copy_and_nothing_else(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir(), test.mkdir()
    long_voice = voiced(4.0, SR, 120, rng)
    sf.write(train / "speaker_a.wav", long_voice, SR)
    sf.write(train / "hiss.flac", noise_clip("hiss", 3.0, SR, rng), SR)
    sf.write(test / "unrelated.wav", voiced(2.0, SR, 190, rng), SR)
    sf.write(test / "other_noise.wav", noise_clip("band", 2.0, SR, rng), SR)
    check_overlap.main([str(test), str(train), "--workers", "1"])  # nothing shared: exit status 0
    assert "0 of 2 files occur" in capsys.readouterr().out
    sf.write(test / "renamed_piece.wav", 0.5 * long_voice[12345:12345 + 2 * SR], SR)
    with pytest.raises(SystemExit) as stop:
        check_overlap.main([str(test), str(train), "--workers", "2"])
    said = capsys.readouterr().out
    assert stop.value.code == 1 and "1 of 3 files occur" in said and "renamed_piece.wav  in " in said
