"""
Train the noise-subtraction U-Net on a prepared set.

    python train.py                                  # data/processed -> models/unet.pt
    python train.py --resume                         # carry on from models/unet_last.pt
    python train.py --init-from models/unet.pt --data-dir my_data/processed   # fine-tune

Each step remixes clean voice and noise on the fly (dataset.RemixDataset), runs the whole
denoiser (STFT, U-Net noise estimate, subtraction, iSTFT) and puts the loss on the denoised
result: L1 between power-law compressed magnitudes (|X|^0.3) plus a small SI-SDR term. The
fixed validation mixtures pick the best epoch by SI-SDR. Writes, next to --out:
  unet.pt (best), unet_last.pt (latest, for --resume), unet_history.json, unet_curves.png.
Every checkpoint carries the model's hyper-parameters, the audio settings and this config.
"""
import argparse
import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from audio import AudioConfig, UserError, atomic_save, run_main, si_sdr, stft
from dataset import MixtureDataset, RemixDataset, read_manifest
from unet import NoiseSubtractionDenoiser, build_model, describe, level_gain


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    p.add_argument("--out", type=Path, default=Path("models/unet.pt"), help="best checkpoint (others go beside it)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--segment-seconds", type=float, default=1.0, help="length of each training crop")
    p.add_argument("--snr-range", type=float, nargs=2, default=(-5.0, 15.0), metavar=("LO", "HI"))
    p.add_argument("--level-range", type=float, nargs=2, default=(-40.0, -10.0), metavar=("LO", "HI"))
    p.add_argument("--base-channels", type=int, default=16, help="U-Net width (the seed used 64)")
    p.add_argument("--depth", type=int, default=4, help="U-Net depth (the seed used 4)")
    p.add_argument("--norm", choices=("batch", "none"), default="batch")
    p.add_argument("--floor-db", type=float, default=-30.0, help="most attenuation any bin gets")
    p.add_argument("--sisdr-weight", type=float, default=0.01, help="weight of the -SI-SDR term in the loss")
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or cuda/mps/cpu")
    p.add_argument("--workers", type=int, default=None, help="DataLoader processes (default: 0 on CPU, 4 on GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue a run (default: the _last checkpoint beside --out)")
    p.add_argument("--init-from", type=Path, help="start from these weights (fine-tuning)")
    p.add_argument("--patience", type=int, default=0, help="stop after this many epochs without a better val SI-SDR (0: never)")
    p.add_argument("--stop-after", type=int, help="end this run after this epoch (the schedule still spans --epochs; "
                   "continue later with --resume)")
    args = p.parse_args(argv)
    if args.resume and args.init_from:
        p.error("--resume and --init-from exclude each other (resume continues a run; init-from starts a new one)")
    for name in ("epochs", "batch_size", "base_channels", "depth"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0 or args.segment_seconds <= 0:
        p.error("--lr and --segment-seconds must be positive")
    return args


def pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available() or name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name} is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}") from None


def code_version():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def loss_fn(model, noisy, voice, sisdr_weight):
    """Loss on the denoised result, at the model's normalised level."""
    est, _ = model(noisy)
    g = level_gain(noisy, model.level_db)
    e, c = est * g, voice * g
    compress = lambda x: (stft(x, model.audio).abs() + 1e-6) ** 0.3
    mag = (compress(e) - compress(c)).abs().mean()
    sdr = si_sdr(e, c).mean()
    return mag - sisdr_weight * sdr, est


@torch.no_grad()
def evaluate(model, loader, device, sisdr_weight):
    """Mean loss, SI-SDR of the output and of the input, over a fixed set."""
    model.eval()
    totals = np.zeros(3)
    n = 0
    for noisy, voice in loader:
        noisy, voice = noisy.to(device), voice.to(device)
        loss, est = loss_fn(model, noisy, voice, sisdr_weight)
        totals += [loss.item() * len(noisy), si_sdr(est, voice).sum().item(), si_sdr(noisy, voice).sum().item()]
        n += len(noisy)
    model.train()
    return [float(t / n) for t in totals]


def save_checkpoint(path, model, optimizer, scheduler, epoch, best, history, args):
    state = dict(model=model.state_dict(), model_args=model.model_args, audio=model.audio.to_dict(),
                 optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), epoch=epoch,
                 best_val_si_sdr=best, history=history, config={k: (str(v) if isinstance(v, Path) else v)
                                                                for k, v in vars(args).items()},
                 code_version=code_version())
    atomic_save(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path):
    from denoise import load_checkpoint as load  # one loader, with clear errors for bad files
    return load(path)


def plot_history(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a.set(xlabel="epoch", ylabel="loss", title="Loss")
    a.legend()
    b.plot(ep, [h["val_si_sdr"] for h in history], "o-", label="denoised")
    b.plot(ep, [h["val_noisy_si_sdr"] for h in history], "--", label="noisy input")
    b.set(xlabel="epoch", ylabel="SI-SDR (dB)", title="Validation SI-SDR")
    b.legend()
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    last_path = out.with_name(out.stem + "_last.pt")
    history_path, curves_path = out.with_name(out.stem + "_history.json"), out.with_name(out.stem + "_curves.png")

    data_cfg = json.loads((args.data_dir / "config.json").read_text()) if (args.data_dir / "config.json").exists() else {}
    audio = AudioConfig.from_dict(data_cfg.get("audio", {}))
    read_manifest(args.data_dir)  # a clear error when there is no prepared set
    train_set = RemixDataset(args.data_dir, "train", args.segment_seconds, args.snr_range, args.level_range,
                             args.seed, audio.sample_rate)
    val_set = MixtureDataset(args.data_dir, "val")
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, num_workers=workers)

    # model, optimiser and schedule; a resumed run takes all three (and the history) from its checkpoint
    start_epoch, best, history = 1, -math.inf, []
    ckpt = None
    if args.resume:
        resume_path = last_path if args.resume == "auto" else Path(args.resume)
        if not resume_path.exists():
            raise UserError(f"nothing to resume: {resume_path} does not exist")
        ckpt = load_checkpoint(resume_path)
        model = build_model(ckpt["model_args"], ckpt["audio"])
        print(f"resuming {resume_path} after epoch {ckpt['epoch']}")
    else:
        model = NoiseSubtractionDenoiser(audio, args.base_channels, args.depth, args.norm, args.floor_db)
    if args.init_from:
        init = load_checkpoint(args.init_from)
        model = build_model(init["model_args"], init["audio"])
        model.load_state_dict(init["model"])
        print(f"initialised from {args.init_from} (its architecture: {describe(model)})")
    if model.audio != audio:
        raise UserError(f"the model's audio settings {model.audio} differ from the data's {audio}")
    model.to(device)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total, warmup = args.epochs * steps_per_epoch, max(1, round(args.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best_val_si_sdr"], ckpt["history"]
    print(f"{describe(model)}; device {device}; {len(train_set)} training voices remixed each epoch, "
          f"{len(val_set)} validation mixtures")

    for epoch in range(start_epoch, args.epochs + 1):
        t0 = time.time()
        train_set.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=False,
                            num_workers=workers, generator=torch.Generator().manual_seed(args.seed * 100003 + epoch),
                            pin_memory=device.type == "cuda")
        running, n = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", leave=False)
        for noisy, voice in bar:
            noisy, voice = noisy.to(device, non_blocking=True), voice.to(device, non_blocking=True)
            loss, _ = loss_fn(model, noisy, voice, args.sisdr_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            scheduler.step()
            running, n = running + loss.item() * len(noisy), n + len(noisy)
            bar.set_postfix(loss=f"{running / n:.4f}")
        val_loss, val_sdr, val_noisy = evaluate(model, val_loader, device, args.sisdr_weight)
        history.append(dict(epoch=epoch, train_loss=running / n, val_loss=val_loss, val_si_sdr=val_sdr,
                            val_noisy_si_sdr=val_noisy, lr=scheduler.get_last_lr()[0], seconds=time.time() - t0))
        improved = val_sdr > best
        best = max(best, val_sdr)
        print(f"epoch {epoch}: train loss {running / n:.4f}, val loss {val_loss:.4f}, val SI-SDR {val_sdr:.2f} dB "
              f"(noisy {val_noisy:.2f}, {val_sdr - val_noisy:+.2f}){' *best*' if improved else ''} "
              f"[{time.time() - t0:.0f} s]")
        if improved:
            save_checkpoint(out, model, optimizer, scheduler, epoch, best, history, args)
        save_checkpoint(last_path, model, optimizer, scheduler, epoch, best, history, args)
        atomic_save(history_path, lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))
        plot_history(history, curves_path)
        since_best = epoch - max(h["epoch"] for h in history if h["val_si_sdr"] == best)
        if args.patience and since_best >= args.patience:
            print(f"no better validation SI-SDR for {args.patience} epochs: stopping early")
            break
        if args.stop_after and epoch >= args.stop_after:
            print(f"stopping after epoch {epoch} as asked; continue with --resume")
            break

    # the figure a user wants: how much the best model improves the unseen test split
    if out.exists() and read_manifest(args.data_dir, "test"):
        model.load_state_dict(load_checkpoint(out)["model"])
        test_loader = DataLoader(MixtureDataset(args.data_dir, "test"), batch_size=args.batch_size, num_workers=workers)
        _, test_sdr, test_noisy = evaluate(model, test_loader, device, args.sisdr_weight)
        print(f"test SI-SDR: noisy {test_noisy:.2f} dB -> denoised {test_sdr:.2f} dB "
              f"(improvement {test_sdr - test_noisy:+.2f} dB) with the best checkpoint {out}")
    print(f"wrote {out}, {last_path.name}, {history_path.name}, {curves_path.name}")


if __name__ == "__main__":
    run_main(main)
