"""unet.py / unet_utils.py: shapes for any input size, the seed's size, and what subtraction guarantees."""
import numpy as np
import pytest
import torch

from audio import AudioConfig, istft, si_sdr, stft
from conftest import noise_clip, voiced
from unet import (ModelConfig, NoiseSubtractionDenoiser, UNet, complex_from_magnitude, count_parameters,
                  subtract_complex_noise, subtract_noise, with_temporal_blocks)


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("size", [(256, 1), (256, 125), (31, 17), (257, 300)])
def test_unet_keeps_any_input_size(depth, size):
    net = UNet(1, 1, base_channels=4, depth=depth).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, *size)).shape == (2, 1, *size)


def test_seed_size_is_one_flag_away():
    # 64 base channels, depth 4, no normalisation: the seed's 31.0 M parameters
    assert count_parameters(UNet(1, 1, base_channels=64, depth=4, norm="none")) == pytest.approx(31.03e6, rel=1e-3)


def voice_noise_mix():
    """2 s of voice plus hiss: the audio settings, voice, noise, their sum and its spectrum."""
    cfg = AudioConfig()
    rng = np.random.default_rng(0)
    voice = torch.from_numpy(voiced(2.0, 16000, 120, rng))
    noise = torch.from_numpy(noise_clip("hiss", 2.0, 16000, rng)) * 0.5
    noisy = voice + noise
    return cfg, voice, noise, noisy, stft(noisy, cfg)


def test_subtracting_the_true_noise_gives_back_the_voice():
    cfg, voice, noise, noisy, spec = voice_noise_mix()
    est = istft(subtract_noise(spec, stft(noise, cfg).abs(), 0.0), cfg, len(noisy))
    assert si_sdr(noisy, voice) < 5
    assert si_sdr(est, voice) > si_sdr(noisy, voice) + 10  # the noisy phase keeps it from being exact
    # no noise: nothing changes; all noise: the floor is what remains
    assert torch.allclose(istft(subtract_noise(spec, torch.zeros_like(spec.abs()), 0.1), cfg, len(noisy)), noisy, atol=1e-5)
    floored = istft(subtract_noise(spec, spec.abs(), 0.1), cfg, len(noisy))
    assert torch.allclose(floored, 0.1 * noisy, atol=1e-5)


def test_denoiser_bounds_silence_and_level():
    torch.manual_seed(0)
    model = NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2)).eval()
    x = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        y, noise = model(x)
        assert y.shape == x.shape and noise.shape == (2, 257, 8000 // 128 + 1)
        cfg = model.audio
        ys, xs = stft(y, cfg).abs(), stft(x, cfg).abs()
        assert torch.all(ys <= xs * 1.01 + 1e-6) and torch.all(ys >= model.floor * xs * 0.99 - 1e-6)
        assert torch.equal(model(torch.zeros(1, 4000))[0], torch.zeros(1, 4000))  # silence in, silence out
        y2, _ = model(10 * x)  # the level is normalised inside: 20 dB louder in, 20 dB louder out
        assert torch.allclose(y2, 10 * y, rtol=1e-3, atol=1e-5)


def test_subtracting_the_true_complex_noise_gives_back_the_voice_exactly():
    cfg, voice, noise, noisy, spec = voice_noise_mix()
    exact = istft(subtract_complex_noise(spec, stft(noise, cfg), 0.0), cfg, len(noisy))
    assert torch.allclose(exact, voice, atol=1e-5)
    # with the default -60 dB floor only bins where the voice is 60 dB under the mixture are lifted
    floored = istft(subtract_complex_noise(spec, stft(noise, cfg), 1e-3), cfg, len(noisy))
    assert si_sdr(floored, voice) > 40
    # all noise: the floor is what remains, with the noisy phase
    assert torch.allclose(istft(subtract_complex_noise(spec, spec, 0.1), cfg, len(noisy)), 0.1 * noisy, atol=1e-5)


def test_complex_denoiser_bounds_silence_and_level():
    torch.manual_seed(0)
    model = NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2, subtraction="complex")).eval()
    assert model.config.subtraction == "complex" and model.unet.out.out_channels == 2
    x = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        y, noise = model(x)
        cfg = model.audio
        xs, ys = stft(x, cfg).abs(), stft(y, cfg).abs()
        assert y.shape == x.shape and noise.shape == xs.shape
        assert torch.all(noise <= xs * (1 + 1e-4) + 1e-6)  # |N| = |M| |Y| < |Y|
        assert torch.all(ys >= model.floor * xs * 0.99 - 1e-6)
        assert torch.equal(model(torch.zeros(1, 4000))[0], torch.zeros(1, 4000))
        y2, _ = model(10 * x)
        assert torch.allclose(y2, 10 * y, rtol=1e-3, atol=1e-5)
    loss = model.train()(x)[0].pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_shipped_magnitude_model_denoises_as_the_magnitude_formula():
    """Old (magnitude) checkpoints build the magnitude model, and it computes |S| = max(|Y| - f|Y|, floor |Y|)
    with the noisy phase, whatever else the class can do."""
    from checkpoint import DEFAULT_MODEL, load_model
    model = load_model(DEFAULT_MODEL)
    assert model.subtraction == "magnitude"
    rng = np.random.default_rng(3)
    x = torch.from_numpy(voiced(1.5, 16000, 110, rng) + noise_clip("band", 1.5, 16000, rng))[None]
    with torch.no_grad():
        y, _ = model(x)
        gain = 10 ** (model.level_db / 20) / x.pow(2).mean().sqrt()
        spec = stft(x * gain, model.audio)
        frac = torch.sigmoid(model.unet(((20 * torch.log10((spec.abs()[:, :256] / 128).clamp_min(1e-5))).clamp(-100, 20)
                                          + 100)[:, None] / 120))[:, 0]
        frac = torch.cat([frac, frac[:, -1:]], dim=1)
        mag = spec.abs()
        expect = istft(spec * torch.maximum(mag - frac * mag, model.floor * mag) / mag.clamp_min(1e-20),
                       model.audio, x.shape[-1]) / gain
    assert torch.allclose(y, expect, atol=1e-6)


def test_complex_from_magnitude_keeps_the_unet_and_starts_as_identity():
    torch.manual_seed(0)
    mag = NoiseSubtractionDenoiser(ModelConfig(base_channels=8, depth=2)).eval()
    cplx = complex_from_magnitude(mag).eval()
    assert cplx.subtraction == "complex" and mag.subtraction == "magnitude"  # the source is left as it was
    old, new = mag.state_dict(), cplx.state_dict()
    first = "unet.downs.0.conv.conv.0.weight"
    assert torch.equal(new[first][:, :1], old[first]) and not new[first][:, 1:].any()  # phase channels start at 0
    assert not new["unet.out.weight"].any() and not new["unet.out.bias"].any()
    assert all(torch.equal(new[k], v) for k, v in old.items() if k != first and not k.startswith("unet.out."))
    x = 0.1 * torch.randn(2, 8000)
    y, noise = cplx(x)
    assert torch.allclose(y, x, atol=1e-5) and noise.abs().max() == 0  # M = 0: nothing subtracted yet
    assert not torch.allclose(mag(x)[0], x, atol=1e-3)  # (while the magnitude model does subtract)
    with pytest.raises(ValueError, match="needs a magnitude"):
        complex_from_magnitude(cplx)


def test_temporal_blocks_start_as_identity_then_see_further_along_time():
    torch.manual_seed(0)
    base = NoiseSubtractionDenoiser(ModelConfig(base_channels=8, depth=2)).eval()
    deep = with_temporal_blocks(base, 3).eval()
    assert deep.config.temporal_blocks == 3 and base.config.temporal_blocks == 0  # the source is left as it was
    assert all(torch.equal(deep.state_dict()[k], v) for k, v in base.state_dict().items())
    x = 0.1 * torch.randn(1, 16000)
    assert torch.equal(deep(x)[0], base(x)[0])  # new blocks start as the identity
    plain = NoiseSubtractionDenoiser(ModelConfig(base_channels=8, depth=2, norm="none")).eval()
    assert torch.equal(with_temporal_blocks(plain, 2).eval()(x)[0], plain(x)[0])  # without BatchNorm too
    # switched on, the blocks let a frame see 7 more bottleneck frames (28 input frames at depth 2) either side
    for block in deep.unet.temporal:
        torch.nn.init.normal_(block.norm.weight)

    def reach(unet):  # the farthest frame whose change moves the output at frame 64
        spec = torch.randn(1, 1, 16, 128)
        moved = [d for d in range(64) if (unet(spec) - unet(spec + (torch.arange(128) == 64 + d))).abs()[..., 64].max() > 0]
        return max(moved)

    assert reach(deep.unet) >= reach(base.unet) + 7 * 4
    assert ModelConfig.from_dict({k: v for k, v in ModelConfig().to_dict().items() if k != "temporal_blocks"}) == ModelConfig()
    with pytest.raises(ValueError, match="already has"):
        with_temporal_blocks(deep, 1)


# ----------------------------------------------------------------------------- the band U-Net (--arch bands)
def test_band_matrices_fold_and_unfold():
    """129 bands at n_fft 512: each bin below 2 kHz its own band, ERB bands above; unfolding keeps a value shared by
    all bands in every bin, folding keeps a flat spectrum's level."""
    from unet_utils import band_matrices
    fold, unfold = band_matrices(512, 16000)
    assert fold.shape == (129, 257) and unfold.shape == (257, 129)
    assert torch.allclose(unfold.sum(1), torch.ones(257)) and torch.allclose(fold.sum(1), torch.ones(129))
    assert torch.equal(unfold[:65, :65], torch.eye(65)) and torch.equal(fold[:64, :64], torch.eye(64))
    assert torch.all(unfold >= 0) and torch.all(fold >= 0)
    widths = (fold > 0).sum(1)
    assert widths[65:].float().mean() > 2 and widths[-1] > widths[70]  # wider bands as the frequency rises


@pytest.mark.parametrize("fine", [False, True])
@pytest.mark.parametrize("frames", [1, 5, 63, 250])
def test_band_unet_keeps_any_length(frames, fine):
    from unet import BandUNet
    net = BandUNet(base_channels=4, depth=3, blocks=2, fine_level=fine).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 129, frames)).shape == (2, 1, 129, frames)


def bands_model(width=4, blocks=3, seed=0, fine=False):
    """A band denoiser whose BatchNorm scales and statistics are not the identity (new blocks start as one)."""
    torch.manual_seed(seed)
    model = NoiseSubtractionDenoiser(ModelConfig(arch="bands", base_channels=width, depth=3, temporal_blocks=blocks,
                                                 fine_level=fine), AudioConfig(hop_length=256)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("fine", [False, True])
def test_band_unet_reach_bounds_what_an_output_frame_depends_on(fine):
    """reach_frames (which sizes denoise.py's chunk context) is at least the true dependence, seen by the gradient."""
    model = bands_model(blocks=3, fine=fine)
    mag = stft(torch.randn(1, 16000 * 8), model.audio).abs().requires_grad_()
    reach = model.reach_frames()
    for t in (200, 201, 202, 203):
        mag.grad = None
        model.noise_fraction(mag)[0, :, t].sum().backward()
        seen = (mag.grad[0].abs().sum(0) > 0).nonzero().flatten()
        assert t - seen.min() <= reach and seen.max() - t <= reach
        assert max(t - seen.min(), seen.max() - t) > reach - 12  # and not far beyond it


def test_band_denoiser_bounds_silence_and_level():
    model = bands_model()
    x = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        y, noise = model(x)
        assert y.shape == x.shape and noise.shape == (2, 257, 8000 // 256 + 1)
        ys, xs = stft(y, model.audio).abs(), stft(x, model.audio).abs()
        assert torch.all(ys <= xs * 1.05 + 1e-6)  # 50% overlap: the output's STFT is not exactly the gain's
        assert torch.equal(model(torch.zeros(1, 4000))[0], torch.zeros(1, 4000))
        y2, _ = model(10 * x)
        assert torch.allclose(y2, 10 * y, rtol=1e-3, atol=1e-5)


def test_band_unet_is_far_cheaper_than_the_seed_unet():
    from torch.utils.flop_counter import FlopCounterMode
    from unet import model_defaults
    flops = []
    for arch, hop in (("unet", 128), ("bands", 256)):
        model = NoiseSubtractionDenoiser(ModelConfig(**model_defaults(arch)), AudioConfig(hop_length=hop)).eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.randn(1, 16000))
        flops.append(fc.get_total_flops())
    assert flops[1] < flops[0] / 40
    with pytest.raises(ValueError, match="subtracts magnitudes"):
        ModelConfig(arch="bands", subtraction="complex")
