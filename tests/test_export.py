"""export.py: the ONNX graph matches PyTorch on any number of frames, and describes itself."""
import numpy as np
import onnx
import pytest
import torch

import export
from audio import UserError
from conftest import SR, voiced
from denoise import denoise_array, load_model


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    export.main(["--model", str(trained), "--out", str(out)])
    return out


def magnitudes(batch, frames, seed):
    """Linear magnitudes spread over the whole dB scale (-110..+20 dB), so the clip is exercised too."""
    db = torch.from_numpy(np.random.default_rng(seed).uniform(-110, 20, (batch, 257, frames)).astype(np.float32))
    return 128 * 10 ** (db / 20)


@pytest.mark.parametrize("batch, frames", [(1, 77), (2, 200)])
def test_onnxruntime_matches_pytorch(trained, exported, batch, frames):
    model = load_model(trained)
    mag = magnitudes(batch, frames, frames)
    with torch.no_grad():
        expected = model.noise_fraction(mag).numpy()
    got = export.OnnxNoiseFraction(exported)(mag).numpy()
    assert got.shape == expected.shape == (batch, 257, frames)
    assert np.abs(got - expected).max() < 1e-4


def test_graph_is_dynamic_and_metadata_round_trips(trained, exported):
    model = load_model(trained)
    proto = onnx.load(str(exported))
    assert proto.opset_import[0].version >= 17
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 257, "frames"]
    meta = export.read_metadata(exported)
    assert meta["audio"] == model.audio.to_dict()
    assert meta["model_args"] == model.model_args
    assert meta["graph"] == export.GRAPH


def test_onnx_denoiser_matches_torch_denoiser(trained, exported):
    """Swapped in for the torch call, the exported graph gives the same denoised audio."""
    rng = np.random.default_rng(1)
    audio = (voiced(1.3, SR, 140, rng) + 0.05 * rng.standard_normal(int(1.3 * SR)).astype(np.float32))[None]
    expected = denoise_array(load_model(trained), audio, SR)
    got = denoise_array(export.denoiser_from_onnx(exported), audio, SR)
    assert np.abs(got - expected).max() < 1e-4


def test_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no model at"):
        export.main(["--model", str(tmp_path / "missing.pt")])
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        export.main(["--model", str(bad)])
