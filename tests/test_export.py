"""export.py: the ONNX graph matches PyTorch on any number of frames, and describes itself."""
import numpy as np
import onnx
import pytest
import torch

import export
import onnx_backend
from audio import UserError
from checkpoint import load_model, save_checkpoint
from conftest import SR, voiced
from denoise import denoise_array


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
    got = onnx_backend.OnnxNoiseEstimate(exported)(mag).numpy()
    assert got.shape == expected.shape == (batch, 257, frames)
    assert np.abs(got - expected).max() < 1e-4


def test_graph_is_dynamic_and_metadata_round_trips(trained, exported):
    model = load_model(trained)
    proto = onnx.load(str(exported))
    assert proto.opset_import[0].version >= 17
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 257, "frames"]
    meta = onnx_backend.read_metadata(exported)
    assert meta["audio"] == model.audio.to_dict()
    assert meta["model_args"] == model.config.to_dict()
    assert meta["graph"] == onnx_backend.GRAPHS["magnitude"]


def test_onnx_denoiser_matches_torch_denoiser(trained, exported):
    """Swapped in for the torch call, the exported graph gives the same denoised audio."""
    rng = np.random.default_rng(1)
    audio = (voiced(1.3, SR, 140, rng) + 0.05 * rng.standard_normal(int(1.3 * SR)).astype(np.float32))[None]
    expected = denoise_array(load_model(trained), audio, SR)
    got = denoise_array(onnx_backend.denoiser_from_onnx(exported), audio, SR)
    assert np.abs(got - expected).max() < 1e-4


def test_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no model at"):
        export.main(["--model", str(tmp_path / "missing.pt")])
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        export.main(["--model", str(bad)])


def test_denoise_uses_an_export_of_the_same_weights_only(trained, tmp_path):
    """denoise.py's auto backend: onnxruntime when model.onnx beside model.pt holds the same weights."""
    import shutil
    ckpt = tmp_path / "m.pt"
    shutil.copy(trained, ckpt)
    rng = np.random.default_rng(3)
    audio = voiced(1.5, SR, 140, rng)[None] + 0.02 * rng.standard_normal((1, int(1.5 * SR))).astype(np.float32)
    expected = denoise_array(load_model(ckpt), audio, SR)
    assert not isinstance(onnx_backend.use_backend(load_model(ckpt), ckpt, "auto", "cpu").noise_fraction, onnx_backend.OnnxNoiseEstimate)
    with pytest.raises(UserError, match="no ONNX export"):
        onnx_backend.use_backend(load_model(ckpt), ckpt, "onnx", "cpu")
    export.main(["--model", str(ckpt)])  # -> m.onnx beside it
    model = onnx_backend.use_backend(load_model(ckpt), ckpt, "auto", "cpu")
    assert isinstance(model.noise_fraction, onnx_backend.OnnxNoiseEstimate)
    assert np.abs(denoise_array(model, audio, SR) - expected).max() < 1e-4
    assert not isinstance(onnx_backend.use_backend(load_model(ckpt), ckpt, "torch", "cpu").noise_fraction, onnx_backend.OnnxNoiseEstimate)
    # other weights under the same name: the stale export is ignored
    other = torch.load(ckpt, weights_only=True)
    other["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in other["model"].items()}
    torch.save(other, ckpt)
    assert not isinstance(onnx_backend.use_backend(load_model(ckpt), ckpt, "auto", "cpu").noise_fraction, onnx_backend.OnnxNoiseEstimate)


def test_a_complex_model_exports_and_denoises_the_same_through_onnxruntime(tmp_path):
    """The complex model's graph (here with temporal blocks): (Re, Im) of Y in, (Re, Im) of the noise fraction
    out; denoise.py's onnx backend."""
    from unet import ModelConfig, NoiseSubtractionDenoiser
    torch.manual_seed(0)
    model = NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2, subtraction="complex", temporal_blocks=2)).eval()
    with torch.no_grad():  # batch-norm statistics and scales that are not the identity, so the check means something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 1.5)
    ckpt = tmp_path / "complex.pt"
    save_checkpoint(ckpt, model)
    export.main(["--model", str(ckpt)])
    proto = onnx.load(str(ckpt.with_suffix(".onnx")))
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*proto.graph.input, *proto.graph.output)]
    assert dims == [["batch", 2, 257, "frames"]] * 2
    assert onnx_backend.read_metadata(ckpt.with_suffix(".onnx"))["graph"] == onnx_backend.GRAPHS["complex"]
    rng = np.random.default_rng(2)
    audio = (voiced(1.1, SR, 130, rng) + 0.05 * rng.standard_normal(int(1.1 * SR)).astype(np.float32))[None]
    expected = denoise_array(load_model(ckpt), audio, SR)
    onnx_model = onnx_backend.use_backend(load_model(ckpt), ckpt, "onnx", "cpu")
    assert isinstance(onnx_model.noise_mask, onnx_backend.OnnxNoiseEstimate)
    assert np.abs(denoise_array(onnx_model, audio, SR) - expected).max() < 1e-4
    assert np.abs(denoise_array(onnx_backend.denoiser_from_onnx(ckpt.with_suffix(".onnx")), audio, SR) - expected).max() < 1e-4
