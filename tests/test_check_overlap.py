"""check_overlap.py: a cut, scaled copy of a training file is found under any name, a stretch shared by
two longer recordings with --window-seconds; unrelated audio is not."""
import numpy as np
import pytest
import soundfile as sf

import check_overlap
from conftest import SR, noise_clip, voiced


def folders_with_a_training_voice(tmp_path, seed):
    """train/ holding one 4 s voice and an empty test/ -> (rng, train, test, that voice)."""
    rng = np.random.default_rng(seed)
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir(), test.mkdir()
    voice = voiced(4.0, SR, 120, rng)
    sf.write(train / "speaker_a.wav", voice, SR)
    return rng, train, test, voice


def test_finds_a_cut_and_scaled_copy_and_nothing_else(tmp_path, capsys):
    rng, train, test, long_voice = folders_with_a_training_voice(tmp_path, 0)
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


def test_window_seconds_finds_a_stretch_shared_by_two_longer_recordings(tmp_path, capsys):
    rng, train, test, broadcast = folders_with_a_training_voice(tmp_path, 1)
    # 1.5 s of the broadcast between two other voices: neither file lies inside the other
    sf.write(test / "cut.wav", np.concatenate([voiced(1.5, SR, 200, rng), 0.7 * broadcast[SR:SR + 3 * SR // 2],
                                               voiced(1.5, SR, 170, rng)]), SR)
    check_overlap.main([str(test), str(train), "--workers", "1"])  # whole recordings: not a copy
    assert "0 of 1 files occur" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        check_overlap.main([str(test), str(train), "--workers", "1", "--window-seconds", "1"])
    said = capsys.readouterr().out
    assert stop.value.code == 1 and "1 of 1 files occur in the others or share a stretch of 1 s" in said
    with pytest.raises(SystemExit):  # a window shorter than the shortest stretch counted is refused
        check_overlap.main([str(test), str(train), "--window-seconds", "0.2"])
