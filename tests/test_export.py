"""export.py and the light runtime: the whole denoiser as one ONNX graph gives the PyTorch model's output, on
any length, for both kinds of model; denoise.py runs it without PyTorch; the shipped export is of the shipped
checkpoint."""
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch

import denoise
import export
from audio import DEFAULT_MODEL, UserError, si_sdr
from checkpoint import load_model, save_checkpoint
from conftest import ROOT, SR, voiced
from onnx_backend import GRAPH, OnnxDenoiser, export_of, file_sha256


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    export.main(["--model", str(trained), "--out", str(out)])
    return out


def noisy(seconds, seed, batch=1):
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    return np.stack([voiced(seconds, SR, 120 + 30 * b, rng)[:n] + 0.05 * rng.standard_normal(n).astype(np.float32)
                     for b in range(batch)])


def agreement_db(got, expected):
    """SI-SDR of one output against the other (no epsilon: the two are meant to agree to float precision)."""
    return si_sdr(torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64), eps=0)


def torch_output(model, x, rms):
    from unet import gain_from_rms
    with torch.no_grad():
        return model(torch.from_numpy(x), gain_from_rms(torch.from_numpy(rms)[:, None], model.level_db))[0].numpy()


@pytest.mark.parametrize("samples, batch", [(257, 1), (16001, 1), (5 * SR + 77, 2)])
def test_the_graph_gives_the_pytorch_models_output(trained, exported, samples, batch):
    """Odd lengths (not whole frames nor whole U-Net pooling blocks), the shortest the reflect padding allows,
    a batch; the RMS is the recording's, not the chunk's, so a quieter rms gives a louder-levelled input."""
    model = load_model(trained)
    x = noisy(samples / SR, samples, batch)[:, :samples]
    rms = np.float32(0.5) * np.sqrt(np.mean(x ** 2, axis=1))
    got, expected = OnnxDenoiser(exported).denoise(x, rms), torch_output(model, x, rms)
    assert got.shape == expected.shape == (batch, samples)
    assert agreement_db(got, expected).min() > 60


def test_metadata_names_the_checkpoint_and_the_dims_are_dynamic(trained, exported):
    model, runner = load_model(trained), OnnxDenoiser(exported)
    assert runner.meta["graph"] == GRAPH and runner.audio == model.audio
    assert runner.meta["model_args"] == model.config.to_dict()
    assert runner.meta["weights_sha256"] == export.fingerprint(model)
    assert runner.meta["checkpoint_sha256"] == file_sha256(trained)
    assert "best validation SI-SDR" in runner.meta["description"]
    proto = onnx.load(str(exported))
    assert proto.opset_import[0].version >= 17
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*proto.graph.input, *proto.graph.output)}
    assert dims["waveform"] == dims["denoised"] == ["batch", "samples"] and dims["rms"] == ["batch", 1]
    assert dims["noise_magnitude"] == ["batch", 257, "frames"]


def test_the_floor_reaches_the_graph(trained, exported):
    """--floor-db on the light path: 0 dB lets everything through; -12 keeps more than the model's own floor."""
    x = noisy(1.5, 3)
    rms = np.sqrt(np.mean(x ** 2, axis=1))
    runner, model = OnnxDenoiser(exported), load_model(trained)
    own = runner.denoise(x, rms)
    runner.floor_db = 0.0
    assert np.abs(runner.denoise(x, rms) - x).max() < 1e-4
    runner.floor_db = model.config.floor_db = -12.0
    kept = runner.denoise(x, rms)
    assert np.sum(own ** 2) < np.sum(kept ** 2) and agreement_db(kept, torch_output(model, x, rms)) > 60


def test_denoise_uses_an_export_of_this_very_checkpoint_only(trained, tmp_path):
    """--backend auto: onnxruntime when m.onnx beside m.pt was exported from its bytes; a retrained m.pt
    (same name) makes the export stale, and PyTorch runs it again."""
    ckpt = tmp_path / "m.pt"
    shutil.copy(trained, ckpt)
    args = denoise.parse_args(["x.wav", "--model", str(ckpt)])
    assert isinstance(denoise.load_runner(args), denoise.TorchDenoiser)
    with pytest.raises(UserError, match="no ONNX export"):
        denoise.load_runner(denoise.parse_args(["x.wav", "--model", str(ckpt), "--backend", "onnx"]))
    export.main(["--model", str(ckpt)])  # -> m.onnx beside it
    runner = denoise.load_runner(args)
    assert isinstance(runner, OnnxDenoiser)
    x = noisy(2.3, 4)
    expected = denoise.denoise_array(load_model(ckpt), x, SR, chunk_seconds=1.0)
    assert agreement_db(denoise.denoise_array(runner, x, SR, chunk_seconds=1.0), expected) > 60
    assert isinstance(denoise.load_runner(denoise.parse_args(["x.wav", "--model", str(ckpt), "--backend", "torch"])),
                      denoise.TorchDenoiser)
    other = torch.load(ckpt, weights_only=True)
    other["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in other["model"].items()}
    torch.save(other, ckpt)
    assert export_of(ckpt) is None and isinstance(denoise.load_runner(args), denoise.TorchDenoiser)


def test_a_complex_model_exports_and_denoises_the_same(tmp_path):
    """The complex model's graph (here with temporal blocks), through denoise_array's chunks."""
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
    x = noisy(2.1, 5)
    expected = denoise.denoise_array(load_model(ckpt), x, SR, chunk_seconds=0.5)
    got = denoise.denoise_array(OnnxDenoiser(ckpt.with_suffix(".onnx")), x, SR, chunk_seconds=0.5)
    assert agreement_db(got, expected) > 60


@pytest.mark.parametrize("fine", [False, True])
def test_a_band_model_exports_and_denoises_the_same(tmp_path, fine):
    """The band U-Net's graph (hop 256, band folding and unfolding, the bottleneck's band mixing), through
    denoise_array's chunks, with the frame grid and reach in its metadata."""
    from test_unet import bands_model
    model = bands_model(width=4, blocks=3, fine=fine)
    ckpt = tmp_path / "bands.pt"
    save_checkpoint(ckpt, model)
    export.main(["--model", str(ckpt)])
    runner = OnnxDenoiser(ckpt.with_suffix(".onnx"))
    assert (runner.frame_grid, runner.reach_frames) == (model.frame_grid(), model.reach_frames())
    assert runner.audio.hop_length == 256
    x = noisy(3.3, 6)
    expected = denoise.denoise_array(load_model(ckpt), x, SR, chunk_seconds=0.5)
    got = denoise.denoise_array(runner, x, SR, chunk_seconds=0.5)
    assert agreement_db(got, expected) > 60
    assert agreement_db(expected, denoise.denoise_array(load_model(ckpt), x, SR, chunk_seconds=60)) > 60


def test_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no model at"):
        export.main(["--model", str(tmp_path / "missing.pt")])
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        export.main(["--model", str(bad)])
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_text("not a model")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        denoise.main(["--model", str(bad_onnx), "--info"])


def test_the_shipped_export_is_of_the_shipped_checkpoint():
    """models/unet.onnx was made by export.py from models/unet.pt as it is now: re-export after any change."""
    onnx_path = DEFAULT_MODEL.with_suffix(".onnx")
    runner = OnnxDenoiser(onnx_path)
    assert runner.meta["checkpoint_sha256"] == file_sha256(DEFAULT_MODEL), "models/unet.pt changed: python export.py"
    model = load_model(DEFAULT_MODEL)
    assert runner.meta["weights_sha256"] == export.fingerprint(model)
    x = noisy(3.0, 6)
    rms = np.sqrt(np.mean(x ** 2, axis=1))
    assert agreement_db(runner.denoise(x, rms), torch_output(model, x, rms)) > 60


NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['denoise.py', *sys.argv[1:]]; "
            f"sys.path.insert(0, {str(ROOT)!r}); "
            f"runpy.run_path({str(ROOT / 'denoise.py')!r}, run_name='__main__')")


def light_cli(cwd, *argv):
    """denoise.py in a process where `import torch` fails, as in an environment from requirements-denoise.txt."""
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, argv)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_denoise_runs_the_shipped_model_without_pytorch(tmp_path):
    x = noisy(2.0, 7, batch=2).T
    sf.write(tmp_path / "in.wav", x, 44100, subtype="PCM_16")
    r = light_cli(tmp_path, "in.wav", "--plot")
    assert r.returncode == 0, r.stderr
    y, sr = sf.read(tmp_path / "in_denoised.wav", dtype="float32")
    assert sr == 44100 and y.shape == x.shape and (tmp_path / "in_denoised.png").is_file()
    expected = denoise.denoise_array(load_model(DEFAULT_MODEL), sf.read(tmp_path / "in.wav", dtype="float32")[0].T, sr)
    assert agreement_db(y.T, expected).min() > 60
    info = light_cli(tmp_path, "--info")
    assert info.returncode == 0 and "MODEL_CARD.md" in info.stdout and "as recorded in its export" in info.stdout


def test_without_pytorch_a_checkpoint_with_no_export_is_a_one_line_error(trained, tmp_path):
    sf.write(tmp_path / "in.wav", noisy(0.5, 8)[0], SR)
    r = light_cli(tmp_path, "in.wav", "--model", trained)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "needs PyTorch" in r.stderr, r.stderr
    assert not (tmp_path / "in_denoised.wav").exists()
