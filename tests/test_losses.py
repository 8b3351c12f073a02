"""losses.py: every term is finite and trainable, the residual term is the noise the model's gain lets through."""
import dataclasses

import pytest
import torch

from audio import AudioConfig, istft, stft
from losses import LossWeights, loss_fn
from unet import ModelConfig, NoiseSubtractionDenoiser, level_gain


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    voice = 0.1 * torch.sin(2 * torch.pi * 220 * t) * (torch.sin(2 * torch.pi * 3 * t) > 0)
    noise = 0.03 * torch.randn(2, 16000, generator=g)
    return voice + noise, voice.expand(2, -1).clone()


@pytest.mark.parametrize("subtraction", ["magnitude", "complex"])
def test_the_gain_is_what_the_model_applies(batch, subtraction):
    torch.manual_seed(0)
    model = NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2, subtraction=subtraction), AudioConfig()).eval()
    noisy, _ = batch
    est, _, gain = model(noisy, with_gain=True)
    g = level_gain(noisy, model.level_db)
    rebuilt = istft(gain * stft(noisy * g, model.audio), model.audio, noisy.shape[-1]) / g
    assert torch.allclose(rebuilt, est, atol=1e-5 * est.abs().max().item())


def test_each_term_adds_a_positive_trainable_part(batch):
    torch.manual_seed(0)
    model = NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2), AudioConfig())
    noisy, voice = batch
    base = LossWeights(sisdr=0.0)
    plain, _ = loss_fn(model, noisy, voice, base)
    for extra in (dict(mr=0.5), dict(residual=0.5)):
        loss, _ = loss_fn(model, noisy, voice, dataclasses.replace(base, **extra))
        assert loss > plain and torch.isfinite(loss)
        model.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_the_residual_term_falls_when_the_noise_is_removed(batch):
    """With the noise-free input the residual noise is zero: the term measures only what noise gets through."""
    torch.manual_seed(0)
    model = NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2), AudioConfig()).eval()
    noisy, voice = batch
    only = LossWeights(complex=0.0, sisdr=0.0)
    with_noise = loss_fn(model, noisy, voice, dataclasses.replace(only, residual=1.0))[0] - loss_fn(model, noisy, voice, only)[0]
    clean = loss_fn(model, voice, voice, dataclasses.replace(only, residual=1.0))[0] - loss_fn(model, voice, voice, only)[0]
    assert with_noise > 0.01 and abs(clean) < 1e-6
