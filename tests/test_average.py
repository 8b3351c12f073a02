"""average.py: the mean of the weights, a checkpoint that names what it averages, clear errors."""
import pytest
import torch

import average
import train
from audio import UserError
from checkpoint import describe_checkpoint, load_model, save_checkpoint
from dataset import MixtureDataset
from unet import ModelConfig, NoiseSubtractionDenoiser


def perturbed_copy(path, out, seed, **flags):
    """The checkpoint at path with every float weight moved a little (another 'run' of the same model,
    its command line given seed and flags)."""
    ckpt = torch.load(path, weights_only=True)
    g = torch.Generator().manual_seed(seed)
    ckpt["model"] = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    ckpt["config"] = dict(ckpt["config"], seed=seed, **flags, given=[*ckpt["config"]["given"], "seed", *flags])
    torch.save(ckpt, out)
    return ckpt


def test_the_average_is_the_mean_of_the_weights_and_names_its_runs(trained, tmp_path):
    a, b = perturbed_copy(trained, tmp_path / "a.pt", 1), perturbed_copy(trained, tmp_path / "b.pt", 2, eq_prob=0.5)
    b["data"]["started_from"] = [dict(path="runs/base.pt"), dict(path="runs/parent.pt")]  # b was fine-tuned
    torch.save(b, tmp_path / "b.pt")
    out = tmp_path / "soup" / "unet.pt"
    average.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(out)])
    soup = torch.load(out, weights_only=True)
    for k, v in soup["model"].items():
        if v.is_floating_point():
            assert torch.allclose(v, (a["model"][k] + b["model"][k]) / 2, atol=1e-7), k
            assert not torch.equal(v, a["model"][k])
    assert [r["path"] for r in soup["averaged_from"]] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    assert [r["config"]["seed"] for r in soup["averaged_from"]] == [1, 2]
    assert soup["data"]["manifest_md5"] == a["data"]["manifest_md5"]  # what it learned from is kept
    text = describe_checkpoint(soup, out)
    assert "the average of 2 checkpoints" in text and "training split:" in text
    run_a, run_b = [line for line in text.splitlines() if line.startswith("  ") and ".pt:" in line]
    assert run_a.endswith("; seed 1") and run_b.endswith("; seed 2, eq_prob 0.5")  # the flags that set each run apart
    assert "from" not in run_a and "; from runs/parent.pt; " in run_b  # and where each started, if not from scratch
    assert soup["averaged_from"][1]["started_from"] == ["runs/base.pt", "runs/parent.pt"]
    x = 0.1 * torch.randn(1, 8000)
    assert load_model(out)(x)[0].shape == x.shape  # and it denoises
    with pytest.raises(UserError, match="no training schedule to resume.*--init-from"):  # no run to continue
        train.main(["--resume", str(out), "--out", str(tmp_path / "more" / "unet.pt")])


def test_a_checkpoint_saved_before_a_model_field_existed_averages_with_a_new_one(trained, tmp_path):
    old = perturbed_copy(trained, tmp_path / "old.pt", 1)
    old["model_args"].pop("temporal_blocks")  # as checkpoints saved before --temporal-blocks existed
    torch.save(old, tmp_path / "old.pt")
    average.main([str(tmp_path / "old.pt"), str(trained), "--out", str(tmp_path / "soup.pt")])
    assert (tmp_path / "soup.pt").exists()


def test_bn_data_re_estimates_the_batchnorm_statistics_of_the_averaged_weights(trained_bands, prepared, tmp_path):
    """--bn-data: each BatchNorm layer's running mean becomes the mean of what reaches it over the training mixtures
    (seen with a hook on the averaged weights), not the mean of the runs' running means; the weights are untouched."""
    a, b = perturbed_copy(trained_bands, tmp_path / "a.pt", 1), perturbed_copy(trained_bands, tmp_path / "b.pt", 2)
    plain, swa = tmp_path / "plain.pt", tmp_path / "swa.pt"
    average.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(plain)])
    average.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(swa), "--bn-data", str(prepared),
                  "--bn-batches", "2", "--batch-size", "3"])
    soup, reestimated = torch.load(plain, weights_only=True), torch.load(swa, weights_only=True)
    stats = [k for k in soup["model"] if k.endswith("running_mean")]
    assert stats and all(torch.equal(soup["model"][k], reestimated["model"][k]) for k in soup["model"]
                         if "running" not in k and "num_batches" not in k)
    model = load_model(plain)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    first.register_forward_hook(lambda m, inp, out: seen.append(inp[0].mean((0, 2, 3))))
    data = MixtureDataset(prepared, "train")
    picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:6].tolist()
    model.train()
    with torch.no_grad():
        for batch in (picks[:3], picks[3:]):
            model(torch.stack([data[j][0] for j in batch]))
    name = next(k for k, m in model.named_modules() if m is first)
    expected = torch.stack(seen).mean(0)
    assert torch.allclose(reestimated["model"][f"{name}.running_mean"], expected, atol=1e-5)
    assert not torch.allclose(soup["model"][f"{name}.running_mean"], expected, atol=1e-3)
    assert reestimated["batchnorm_from"]["mixtures"] == 6
    assert "re-estimated on 6 training mixtures" in describe_checkpoint(reestimated, swa)
    assert not load_model(swa).training


def test_errors(trained, tmp_path):
    other = tmp_path / "other.pt"
    save_checkpoint(other, NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2)))
    with pytest.raises(UserError, match="another model"):
        average.main([str(trained), str(other), "--out", str(tmp_path / "x.pt")])
    assert not (tmp_path / "x.pt").exists()  # nothing half-written
    with pytest.raises(UserError, match="exists"):  # never over an existing file by accident
        average.main([str(trained), str(trained), "--out", str(other)])
    with pytest.raises(SystemExit):
        average.main([str(trained), "--out", str(tmp_path / "y.pt")])
    with pytest.raises(UserError, match="no model"):
        average.main([str(trained), str(tmp_path / "missing.pt"), "--out", str(tmp_path / "z.pt")])
    with pytest.raises(UserError, match="no prepared set"):
        average.main([str(trained), str(trained), "--out", str(tmp_path / "w.pt"), "--bn-data", str(tmp_path)])
    assert not (tmp_path / "w.pt").exists()
