"""
Train the noise-subtraction U-Net on a prepared set.

    python train.py                                  # data/processed -> models/trained/unet.pt
    python train.py --resume                         # carry on from models/trained/unet_last.pt
    python train.py --init-from models/unet.pt --data-dir my_data/processed   # fine-tune the pretrained model
    python train.py --time-budget 30                 # as much as 30 minutes allow (schedule fitted to the time)

Each step remixes clean voice and noise on the fly (dataset.RemixDataset in DataLoader workers, or on a GPU
dataset.DeviceRemixer, whole batches in its memory), runs the whole
denoiser (STFT, U-Net noise estimate, subtraction, iSTFT) and puts the loss on the denoised
result: L1 between power-law compressed spectra (|X|^0.3, on magnitudes and, with weight
--complex-weight, on the complex values so that the noisy phase left in a bin counts) plus a
small SI-SDR term (losses.py; --mr-weight and --residual-weight add more). Convolutions run in bfloat16 (autocast) where the hardware does that fast:
CUDA GPUs with bf16, and CPUs with AMX or AVX512-BF16 (about 3x faster than float32 here).
The fixed validation mixtures pick the best epoch by SI-SDR, scored in float32. Writes, next to --out:
  unet.pt (best, without optimizer state), unet_last.pt (latest, for --resume), unet_history.json, unet_curves.png.
Every checkpoint carries the model's hyper-parameters, the audio settings and this config.
"""
import argparse
import functools
from dataclasses import replace
import hashlib
import json
import math
import itertools
import os
import platform
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from audio import arg_parser, AudioConfig, UserError, atomic_save, run_main, si_sdr, temp_path
from checkpoint import lineage, load_checkpoint, model_from_checkpoint, save_checkpoint
from dataset import NOISE_MIX_DB, SPEED_SPREAD, DeviceRemixer, MixtureDataset, RemixDataset, read_manifest
from losses import LossWeights, loss_fn
from unet import (BAND_DEFAULTS, BAND_HOP, MODEL_DEFAULTS, ModelConfig, NoiseSubtractionDenoiser, complex_from_magnitude,
                  describe, model_defaults, with_temporal_blocks)

ARCH_FLAGS = ("arch", "base_channels", "depth", "norm", "floor_db", "subtraction", "temporal_blocks", "fine_level")  # defaults: unet.model_defaults
UNSET = object()  # a flag not given on the command line


def add_augmentation_args(p):
    """The training-mixture augmentations, each off (0) by default."""
    p.add_argument("--eq-prob", type=float, default=0.0,
                   help="chance that the voice, and separately the noise, of a training mixture pass through a random "
                        "second-order filter (spectral tilts and bumps of up to about 17 dB)")
    p.add_argument("--noise-mix-prob", type=float, default=0.0,
                   help=f"chance that a training mixture carries a second noise recording, within {NOISE_MIX_DB:g} dB of the first")
    p.add_argument("--speed-prob", type=float, default=0.0,
                   help=f"chance that the voice, and separately each noise, of a training mixture play up to {SPEED_SPREAD * 100:g}%% "
                        "faster or slower (resampled: pitch and formants move too)")


def add_length_args(p):
    """How long a run trains: --epochs, or --time-budget minutes."""
    p.add_argument("--epochs", type=int, default=12, help="passes over the training voices (the schedule spans them)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="train for this long instead of --epochs: the warm-up and cosine schedule span the time, "
                        "--evals validations along it, and the run ends with its best and last checkpoints")
    p.add_argument("--evals", type=int, default=10, help="with --time-budget: validations (and checkpoints) along it")
    p.add_argument("--session-minutes", type=float, metavar="MINUTES",
                   help="with --time-budget: end this working session after this long with a validation and both "
                        "checkpoints; --resume carries on with the budget's clock and schedule where it stopped")


def add_loss_args(p):
    """The loss's weights (losses.py)."""
    p.add_argument("--sisdr-weight", type=float, default=0.01, help="weight of the -SI-SDR term in the loss")
    p.add_argument("--complex-weight", type=float, default=0.0,
                   help="share of the compressed-spectrum L1 put on complex values rather than magnitudes")
    p.add_argument("--mr-weight", type=float, default=0.0,
                   help="weight of the compressed-magnitude L1 at STFT sizes 256 and 1024 as well (multi-resolution)")
    p.add_argument("--residual-weight", type=float, default=0.0,
                   help="weight of the residual noise, the true noise through the model's spectral gain: more "
                        "suppression of what gets through, against speech distortion")


def add_model_args(p):
    """The architecture (unet.ModelConfig; left out, the checkpoint's or the architecture's defaults) and its STFT hop."""
    p.add_argument("--arch", choices=("unet", "bands"),
                   help=f"unet: the seed's U-Net on all 256 bins (1.94 M parameters); bands: the band U-Net (129 bands, "
                        f"separable convolutions, STFT hop {BAND_HOP}), several times faster to train (default {MODEL_DEFAULTS['arch']})")
    p.add_argument("--base-channels", type=int, help=f"U-Net width (default {MODEL_DEFAULTS['base_channels']}, "
                   f"bands {BAND_DEFAULTS['base_channels']}; the seed used 64)")
    p.add_argument("--depth", type=int, help=f"U-Net depth (default {MODEL_DEFAULTS['depth']}, as the seed; "
                   f"bands {BAND_DEFAULTS['depth']})")
    p.add_argument("--norm", choices=("batch", "none"), help=f"default {MODEL_DEFAULTS['norm']}")
    p.add_argument("--floor-db", type=float, help=f"most attenuation any bin gets (default {MODEL_DEFAULTS['floor_db']})")
    p.add_argument("--subtraction", choices=("magnitude", "complex"),
                   help=f"subtract a predicted noise magnitude and keep the noisy phase, or a complex noise estimate "
                        f"that corrects the phase too (default {MODEL_DEFAULTS['subtraction']})")
    p.add_argument("--temporal-blocks", type=int, help="dilated blocks along time after the U-Net's bottleneck, "
                   f"each seeing twice as far (default {MODEL_DEFAULTS['temporal_blocks']}, bands "
                   f"{BAND_DEFAULTS['temporal_blocks']}; --init-from adds them to a seed U-Net)")
    p.add_argument("--fine-level", action=argparse.BooleanOptionalAction, help="bands: a level on all 129 bands "
                   "too, in and out (slower, finer; default: none)")
    p.add_argument("--hop-length", type=int, help=f"the model's STFT hop in samples (default: the prepared set's, "
                   f"{BAND_HOP} for --arch bands)")


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("--data-dir", type=Path, default=Path("data/processed"), help="the prepared set (prepare_data.py --out)")
    p.add_argument("--out", type=Path, default=Path("models/trained/unet.pt"),
                   help="best checkpoint (others go beside it; models/unet.pt is the pretrained model)")
    p.add_argument("--overwrite", action="store_true", help="start a new run over an existing --out")
    add_length_args(p)
    p.add_argument("--batch-size", type=int, default=16, help="crops per step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="epochs of linear learning-rate warm-up")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--segment-seconds", type=float, default=1.0, help="length of each training crop")
    p.add_argument("--corpus-weights", nargs="+", default=[], metavar="CORPUS=W",
                   help="draw training voices of CORPUS W times as often as others (corpora as prepare_data.py "
                        "names them, e.g. hsc_00C=2); the epoch length stays the number of training voices")
    p.add_argument("--noise-weights", nargs="+", default=[], metavar="CORPUS=W",
                   help="draw training noise from noise corpus CORPUS W times as often as from others (the first "
                        "folder of the manifest's noise_source: each --noise-dir's name when prepare_data.py had "
                        "several, e.g. noise=4)")
    p.add_argument("--snr-range", type=float, nargs=2, default=(-5.0, 15.0), metavar=("LO", "HI"), help="SNR (dB) of the remixed training mixtures")
    p.add_argument("--level-range", type=float, nargs=2, default=(-40.0, -10.0), metavar=("LO", "HI"), help="RMS level (dBFS) of the remixed training mixtures")
    add_augmentation_args(p)
    add_model_args(p)
    add_loss_args(p)
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA GPUs and CPUs that support it fast, fp16 on older GPUs, else fp32")
    p.add_argument("--grad-clip", type=float, default=5.0, help="largest gradient norm")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or cuda/mps/cpu")
    p.add_argument("--workers", type=int, default=None, help="DataLoader processes (default: 0 on CPU, 4 on GPU)")
    p.add_argument("--mixing", choices=("auto", "loader", "device"), default="auto",
                   help="where training mixtures are made: loader (DataLoader workers, an item at a time) or device "
                        "(the training audio in the device's memory, whole batches mixed there: dataset.DeviceRemixer); "
                        "auto: device on GPUs, loader on the CPU")
    p.add_argument("--seed", type=int, default=0, help="seed of the model, the remixing and the batches")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue a run (default: the _last checkpoint beside --out)")
    p.add_argument("--init-from", type=Path, help="start from these weights (fine-tuning)")
    p.add_argument("--patience", type=int, default=0, help="stop after this many epochs without a better val SI-SDR (0: never)")
    p.add_argument("--stop-after", type=int, help="end this run after this epoch (the schedule still spans --epochs; "
                   "continue later with --resume)")
    defaults = vars(p.parse_args([]))
    # parse into a namespace that already holds every flag as UNSET: argparse then sets only the flags given
    # (--resume keeps the checkpoint's value of every other one)
    args = p.parse_args(argv, argparse.Namespace(**dict.fromkeys(defaults, UNSET)))
    args.given = {k for k, v in vars(args).items() if v is not UNSET}
    arch = args.arch if args.arch is not UNSET else MODEL_DEFAULTS["arch"]
    for k, v in defaults.items():
        if getattr(args, k) is UNSET:  # architecture flags left out take the model's defaults (or the checkpoint's)
            setattr(args, k, model_defaults(arch)[k] if k in ARCH_FLAGS else v)
    args.arch_given = args.given & set(ARCH_FLAGS)
    check_args(p, args)
    return args


def check_args(p, args):
    """Values argparse cannot check alone: a one-line error (p.error) for each."""
    if args.resume and args.init_from:
        p.error("--resume and --init-from exclude each other (resume continues a run; init-from starts a new one)")
    for name in ("epochs", "batch_size", "base_channels", "depth", "evals"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.temporal_blocks <= 6:
        p.error("--temporal-blocks must be between 0 and 6")
    if args.arch == "bands" and (args.subtraction != "magnitude" or args.norm != "batch"):
        p.error("--arch bands subtracts magnitudes, with BatchNorm (no --subtraction complex, --norm none)")
    if args.hop_length is not None and not 0 < args.hop_length <= 512:
        p.error("--hop-length must be between 1 and 512")
    if args.session_minutes is not None and (args.time_budget is None or not args.session_minutes > 0):
        p.error("--session-minutes needs a --time-budget and must be positive")
    if args.time_budget is not None and args.stop_after:
        p.error("--stop-after ends an --epochs run early; a --time-budget run ends when its time is spent")
    if args.lr <= 0 or args.segment_seconds <= 0 or (args.time_budget is not None and not args.time_budget > 0):
        p.error("--lr, --segment-seconds and --time-budget must be positive")
    if min(args.mr_weight, args.residual_weight) < 0:
        p.error("--mr-weight and --residual-weight must not be negative")
    for flag in ("eq_prob", "noise_mix_prob", "speed_prob"):
        if not 0 <= getattr(args, flag) <= 1:
            p.error(f"--{flag.replace('_', '-')} must be between 0 and 1")
    for flag, pairs, example in (("--corpus-weights", args.corpus_weights, "hsc_00C=2"),
                                 ("--noise-weights", args.noise_weights, "noise=4")):
        try:
            weights = parse_weights(pairs)
        except ValueError:
            p.error(f"{flag} takes CORPUS=WEIGHT pairs, e.g. {example}")
        if any(not (w >= 0 and math.isfinite(w)) for w in weights.values()):
            p.error(f"{flag} must be finite and not negative")


def parse_weights(pairs):
    """CORPUS=W pairs (--corpus-weights, --noise-weights) as {corpus: weight}."""
    return {k: float(v) for k, v in (w.split("=", 1) for w in pairs)}


def corpus_weights(args):
    """--corpus-weights as {corpus: weight} (parse_args has checked the pairs)."""
    return parse_weights(args.corpus_weights)


def data_summary(data_dir, manifest_md5):
    """What a prepared set holds, for ckpt["data"]: its folders, the training split's speakers, recordings and
    minutes (prepare_data.py's summary.json), every split's figures, and the manifest's MD5."""
    cfg_path, summary_path = Path(data_dir) / "config.json", Path(data_dir) / "summary.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    splits = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    train = splits.get("train", {})
    return dict(data_dir=str(data_dir), speech_dirs=cfg.get("speech_dir"), noise_dirs=cfg.get("noise_dir"),
                **{k: train.get(k) for k in ("n_speakers", "n_speech_files", "speech_minutes", "n_noise_files",
                                             "noise_minutes", "corpora")},
                manifest_md5=manifest_md5, splits=splits)


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


@functools.cache  # read once, when the run starts (log_start): the code it runs, even if the tree changes later
def code_version():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def pick_precision(name, device):
    """The autocast dtype for training (None: float32)."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()):
            name = "bf16"
        else:
            name = "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU (use bf16 or fp32)")
    return dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=None)[name]


@torch.no_grad()
def evaluate(model, loader, device, args, world=1, corpora=None, names=()):
    """Mean loss, SI-SDR of the output and of the input, over a fixed set (summed over ranks); with corpora
    (one name per item of the loader, in order) also the output's SI-SDR per corpus in names (the same on
    every rank), as a dict."""
    model.eval()
    totals = np.zeros(3)
    per_item = []
    for noisy, voice in loader:
        noisy, voice = noisy.to(device), voice.to(device)
        loss, est = loss_fn(model, noisy, voice, LossWeights.from_args(args))
        sdr = si_sdr(est, voice)
        totals += [loss.item() * len(noisy), sdr.sum().item(), si_sdr(noisy, voice).sum().item()]
        per_item += sdr.tolist()
    model.train()
    by_corpus = {}
    for name in names:
        mine = [v for v, c in zip(per_item, corpora) if c == name]
        total, count = all_sum([sum(mine), len(mine)], device, world)
        by_corpus[name] = round(total / max(count, 1), 3)
    *totals, n = all_sum([*totals.tolist(), len(per_item)], device, world)
    return [float(t / n) for t in totals] + ([by_corpus] if corpora is not None else [])


NOT_INHERITED = {"out", "overwrite", "resume", "init_from", "stop_after", "session_minutes", "device", "workers", "mixing",
                 "arch_given", "given", "hop_length", *ARCH_FLAGS}


def config_value(v):
    """A flag's value as checkpoints store it (plain types, so that weights_only loading reads it)."""
    return str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else list(v) if isinstance(v, tuple) else v


def inherit_settings(ckpt, args):
    """--resume carries on with the checkpoint's training settings, except for flags given now."""
    taken = []
    for k, v in ckpt.get("config", {}).items():
        if k in NOT_INHERITED or k in args.given or not hasattr(args, k) or config_value(v) == config_value(getattr(args, k)):
            continue
        setattr(args, k, Path(v) if k == "data_dir" else type(getattr(args, k))(v) if k.endswith("range") else v)
        taken.append(f"--{k.replace('_', '-')} {v}")
    return taken


def check_same_architecture(ckpt, args, path, exempt=frozenset()):
    """Architecture flags given with --resume/--init-from must agree with the checkpoint (but those exempt)."""
    has = ModelConfig.from_dict(ckpt["model_args"])
    clash = [f"--{k.replace('_', '-')} {getattr(args, k)} but {path} has {getattr(has, k)}"
             for k in sorted(args.arch_given - set(exempt)) if getattr(has, k) != getattr(args, k)]
    if clash:
        raise UserError(f"the checkpoint's architecture wins: {'; '.join(clash)} (leave those flags out)")


def save_run(path, model, optimizer, scheduler, epoch, best, history, args, data, compute):
    """optimizer=None leaves out AdamW's moments (twice the weights' size): the best checkpoint is the
    one people ship and fine-tune from, the _last one carries everything an exact --resume needs. compute:
    where and how long the run trained, a record per session (Run.compute)."""
    extra = dict(scheduler=scheduler.state_dict(), epoch=epoch, best_val_si_sdr=best, history=history,
                 config={k: config_value(v) for k, v in vars(args).items()}, data=data, code_version=code_version(),
                 compute=compute)
    if optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    save_checkpoint(path, model, **extra)


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


def setup_distributed(args):
    """torchrun sets RANK/WORLD_SIZE: then run DistributedDataParallel (NCCL on GPUs, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return 0, 1, pick_device(args.device)
    import torch.distributed as dist
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = pick_device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, dist.get_world_size(), device


def all_sum(values, device, world):
    """Sum a list of numbers over all ranks (a no-op in a single process)."""
    if world == 1:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def epoch_order(train_set, epoch, args, rank, world):
    """This epoch's training items for this rank: a shuffle of all voices (cut into equal shares under torchrun,
    the first ones repeated to fill the last share), or draws with replacement by --corpus-weights; either way
    from (seed, epoch), so a resumed run sees what an uninterrupted one would."""
    n = len(train_set)
    if args.corpus_weights:
        rng = np.random.default_rng([args.seed, epoch])
        return rng.choice(n, size=n, p=train_set.corpus_weights(corpus_weights(args)))[rank::world].tolist()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 100003 + epoch)).tolist()
    share = math.ceil(n / world)
    return (order * 2)[:share * world][rank::world]


def epoch_batches(data, epoch, args, rank, world, device, skip=0):
    """This epoch's training batches after the first `skip` (done before a --resume), (noisy, voice) on device:
    mixed item by item in DataLoader workers (RemixDataset), or a whole batch at a time in the device's memory
    (DeviceRemixer, --mixing device)."""
    order, size = epoch_order(data.train_set, epoch, args, rank, world)[skip * args.batch_size:], args.batch_size
    if data.remixer is not None:
        return (data.remixer.batch(order[i:i + size], epoch, skip + k) for k, i in enumerate(range(0, len(order), size)))
    data.train_set.set_epoch(epoch)  # fresh mixtures every epoch, the same ones after a resume
    loader = DataLoader(data.train_set, sampler=order, batch_size=size, num_workers=data.workers,
                        pin_memory=device.type == "cuda")
    return ((noisy.to(device, non_blocking=True), voice.to(device, non_blocking=True)) for noisy, voice in loader)


# ----------------------------------------------------------------------------- the steps of a run
def output_paths(args, master):
    """The run's files beside --out; refuses to start over a trained model unless told to."""
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = SimpleNamespace(best=out, last=out.with_name(out.stem + "_last.pt"),
                            history=out.with_name(out.stem + "_history.json"), curves=out.with_name(out.stem + "_curves.png"))
    if out.exists() and not args.resume and not args.overwrite:  # never lose a trained model by accident
        raise UserError(f"{out} exists; continue it with --resume, fine-tune it with --init-from {out} "
                        f"--out OTHER.pt, or replace it with --overwrite")
    if master:  # a run killed while saving leaves a temporary file; the real files are always whole
        for p in vars(paths).values():
            temp_path(p).unlink(missing_ok=True)
    return paths


def resume_checkpoint(args, paths, log):
    """With --resume: the checkpoint to continue and its path (its settings first, they say which data to load),
    else (None, None)."""
    if not args.resume:
        return None, None
    path = paths.last if args.resume == "auto" else Path(args.resume)
    if not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist")
    ckpt = load_checkpoint(path)
    if "scheduler" not in ckpt:  # e.g. average.py's output: weights without a run to continue
        raise UserError(f"{path} holds no training schedule to resume (an averaged or exported model?); "
                        f"start a new run from its weights with --init-from {path}")
    check_same_architecture(ckpt, args, path)
    taken = inherit_settings(ckpt, args)
    if taken:
        log(f"settings from {path}: {' '.join(taken)}")
    log(f"resuming {path} after epoch {ckpt['epoch']}")
    return ckpt, path


def load_data(args, rank, world, device):
    """The prepared set: remixed training voices, this rank's share of the fixed validation mixtures, and
    what the set holds (for ckpt["data"])."""
    cfg_path = args.data_dir / "config.json"
    audio = AudioConfig.from_dict(json.loads(cfg_path.read_text()).get("audio", {}) if cfg_path.exists() else {})
    read_manifest(args.data_dir)  # a clear error when there is no prepared set
    summary = data_summary(args.data_dir, hashlib.md5((args.data_dir / "manifest.csv").read_bytes()).hexdigest())
    train_set = RemixDataset(args.data_dir, "train", args.segment_seconds, args.snr_range, args.level_range,
                             args.seed, audio.sample_rate, args.eq_prob, args.noise_mix_prob, args.speed_prob)
    if args.noise_weights:
        train_set.set_noise_weights(parse_weights(args.noise_weights))
    val_set = MixtureDataset(args.data_dir, "val")
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    mixing = args.mixing if args.mixing != "auto" else "loader" if device.type == "cpu" else "device"
    remixer = DeviceRemixer(train_set, device) if mixing == "device" else None
    mine = range(rank, len(val_set), world)  # each rank scores its share; the sums are reduced across ranks
    return SimpleNamespace(audio=audio, summary=summary, train_set=train_set, val_set=val_set, workers=workers,
                           mixing=mixing, remixer=remixer,
                           val_loader=DataLoader(Subset(val_set, mine), batch_size=args.batch_size, num_workers=workers),
                           val_corpora=[val_set.rows[i].get("corpus") or "" for i in mine],
                           corpora=sorted({r.get("corpus") or "" for r in val_set.rows}))


def make_model(args, ckpt, ckpt_path, data, device, log):
    """A resumed run's model, the --init-from weights, or a new model from the architecture flags. The runs the
    weights started from go into data.summary["started_from"] (ckpt["data"]), so a fine-tuned model names them."""
    audio = data.audio
    if ckpt is not None:
        model = model_from_checkpoint(ckpt, ckpt_path).train()
        if (ckpt.get("data") or {}).get("started_from"):
            data.summary["started_from"] = ckpt["data"]["started_from"]
    elif args.init_from:
        init = load_checkpoint(args.init_from)
        model = model_from_checkpoint(init, args.init_from)
        # --subtraction complex from a magnitude model: its U-Net carries over, with a new head (unet.complex_from_magnitude)
        to_complex = "subtraction" in args.arch_given and args.subtraction == "complex" and model.subtraction == "magnitude"
        # --temporal-blocks N on a model with fewer: its layers carry over, the new blocks start as the identity
        add_blocks = "temporal_blocks" in args.arch_given and args.temporal_blocks > model.config.temporal_blocks
        check_same_architecture(init, args, args.init_from,
                                exempt={k for k, on in (("subtraction", to_complex), ("temporal_blocks", add_blocks)) if on})
        model = complex_from_magnitude(model) if to_complex else model
        model = (with_temporal_blocks(model, args.temporal_blocks) if add_blocks else model).train()
        data.summary["started_from"] = lineage(init, args.init_from)
        log(f"initialised from {args.init_from}" + (", its U-Net under a new complex head" if to_complex else "")
            + (f", {args.temporal_blocks} temporal blocks added" if add_blocks else ""))
    else:  # the data's audio settings, with the architecture's own hop (or --hop-length)
        hop = args.hop_length or (BAND_HOP if args.arch == "bands" else audio.hop_length)
        model = NoiseSubtractionDenoiser(ModelConfig(**{k: getattr(args, k) for k in ARCH_FLAGS}),
                                         replace(audio, hop_length=hop))
    if args.hop_length is not None and model.audio.hop_length != args.hop_length:
        raise UserError(f"the checkpoint's STFT hop {model.audio.hop_length} wins: leave --hop-length out")
    if model.audio.sample_rate != audio.sample_rate:
        raise UserError(f"the model works at {model.audio.sample_rate} Hz, the data at {audio.sample_rate} Hz")
    model.to(device)
    if device.type in ("cpu", "cuda"):  # oneDNN and cuDNN convolutions are faster on NHWC tensors
        model.to(memory_format=torch.channels_last)
    return model


def build_optimizer(args, model, ckpt, steps_per_epoch, clock, log):
    """AdamW with linear warm-up then cosine decay, over all --epochs or (--time-budget) over the time, the
    warm-up taking the same share of it (--warmup-epochs / --epochs); a resumed run takes both (and the epoch,
    best score and history) from its checkpoint."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if clock.timed:
        warm = max(args.warmup_epochs / args.epochs, 1e-9)
        schedule = lambda s: min(1.0, max(clock.fraction(), 1e-3) / warm) * 0.5 * (1 + math.cos(math.pi * clock.fraction()))
    else:
        total, warmup = args.epochs * steps_per_epoch, max(1, round(args.warmup_epochs * steps_per_epoch))
        schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if ckpt is None:
        return optimizer, scheduler, 0, -math.inf, []
    if "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    else:  # a best/shipped checkpoint: same weights and schedule position, fresh AdamW moments
        log("the checkpoint holds no optimizer state (a best checkpoint): AdamW restarts its moments")
    scheduler.load_state_dict(ckpt["scheduler"])
    # the position it stopped at: whole epochs, or within one under --time-budget (3.4: 40% of the fourth done)
    return optimizer, scheduler, ckpt["epoch"], ckpt["best_val_si_sdr"], ckpt["history"]


class Clock:
    """A run's training time and work: this session's steps and items, and with --time-budget the time spent
    (earlier sessions' too, after --resume), read on rank 0 and shared each step so that every rank takes the
    same learning rate and stops at the same step. Validations fall at each 1/--evals of the budget and when
    it (or this session's --session-minutes) is spent; training stops early enough for the last one (as long as
    the one before) to fit."""

    def __init__(self, minutes, evals, earlier_s, device, world, session_minutes=None):
        self.timed, self.budget = minutes is not None, (minutes or 0) * 60
        self.session_budget = (session_minutes or 0) * 60
        self.earlier, self.start, self.device, self.world = earlier_s, time.time(), device, world
        self.now, self.reserve, self.steps, self.items = earlier_s, 0.0, 0, 0
        self.marks = [m for m in (self.budget * k / evals for k in range(1, evals)) if m > earlier_s]  # those ahead

    def tick(self, items):
        """After each training step."""
        self.steps, self.items = self.steps + 1, self.items + items
        self.read()

    def read(self):
        """The time spent (rank 0's, on every rank)."""
        if self.timed:
            t = torch.tensor(self.earlier + time.time() - self.start, dtype=torch.float64, device=self.device)
            if self.world > 1:
                import torch.distributed as dist
                dist.broadcast(t, 0)
            self.now = t.item()

    def session_seconds(self):
        return time.time() - self.start

    def fraction(self):
        return min(1.0, self.now / self.budget) if self.timed else 0.0

    def up(self):
        return self.timed and self.now + self.reserve >= self.budget

    def session_up(self):
        return bool(self.session_budget) and self.now - self.earlier + self.reserve >= self.session_budget

    def due(self):
        return self.up() or self.session_up() or self.timed and bool(self.marks) and self.now >= self.marks[0]

    def validated(self, seconds):
        """After a validation of this many seconds: the time it took counts before deciding whether to go on (else a
        budget spent during the last validation would take one more step and validation)."""
        self.read()
        self.reserve, self.marks = seconds, [m for m in self.marks if m > self.now]


def device_name(device):
    """The machine a run trained on, for ckpt["compute"]: the GPU's name, or the CPU's model and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (mps)"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads"


def compute_record(clock, data, args, device, world, amp_dtype):
    """Where and how long this session trained: ckpt["compute"] holds one per session of a run."""
    return dict(device=device_name(device), processes=world, precision=str(amp_dtype or torch.float32).replace("torch.", ""),
                mixing=data.mixing, minutes=round(clock.session_seconds() / 60, 2), steps=clock.steps,
                audio_hours=round(clock.items * world * args.segment_seconds / 3600, 3),
                date=time.strftime("%Y-%m-%d"), code_version=code_version())


def log_start(args, model, data, device, world, amp_dtype, log):
    """One line on the model, the device and the data (and, with --corpus-weights or --noise-weights, each
    corpus's share of the draws)."""
    train_set = data.train_set
    shares = []
    if args.corpus_weights:
        shares.append(("voices", train_set.corpora, train_set.corpus_weights(corpus_weights(args))))
    if train_set.noise_cdf is not None:
        shares.append(("noises", train_set.noise_corpora, np.diff(train_set.noise_cdf, prepend=0)))
    for what, labels, w in shares:
        labels = np.array(labels)
        log(f"training {what} drawn by corpus: " + ", ".join(f"{c} {100 * w[labels == c].sum():.0f}%" for c in sorted(set(labels))))
    log(f"{describe(model)}; code {code_version()}; device {device}{f' x {world} processes' if world > 1 else ''}; "
        f"{str(amp_dtype or torch.float32).replace('torch.', '')} autocast; "
        f"{len(train_set)} training voices remixed each epoch ({data.mixing} mixing), {len(data.val_set)} validation mixtures"
        + (f"; {args.time_budget:g} minutes of training" if args.time_budget else ""))


def batch_stream(data, args, rank, world, device, start):
    """The run's training batches from position `start` on (0 for a new run; a resumed one goes on with the rest
    of the epoch it stopped in), epoch after epoch (up to --epochs, or without end under --time-budget), each with
    the position it ends: epoch - 1 + share of the epoch done (a whole number at an epoch's end)."""
    first = math.floor(start) + 1
    epochs = itertools.count(first) if args.time_budget else range(first, args.epochs + 1)
    for epoch in epochs:
        steps = math.ceil(len(epoch_order(data.train_set, epoch, args, rank, world)) / args.batch_size)
        skip = round((start - first + 1) * steps) if epoch == first else 0  # exact while epochs have < 1000 steps
        for k, (noisy, voice) in enumerate(epoch_batches(data, epoch, args, rank, world, device, skip), skip):
            yield epoch - 1 + (k + 1) / steps, noisy, voice


def train_step(model, noisy, voice, optimizer, scheduler, scaler, amp_dtype, weights, args):
    """One optimizer step; the batch's loss (a tensor: reading it waits for the device)."""
    loss, _ = loss_fn(model, noisy, voice, weights, amp_dtype)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


class BudgetBar(tqdm):
    """A bar over the --time-budget's seconds whose {left} is the budget still unspent (tqdm's {remaining} would
    extrapolate from its own rate, which counts start-up and validations)."""

    @property
    def format_dict(self):
        d = super().format_dict
        return dict(d, left=tqdm.format_interval(max(0, d["total"] - d["n"])))


def run_bar(args, clock, start, steps_per_epoch, master):
    """One progress bar for the whole run: steps of all --epochs, or the --time-budget's seconds (time left shown)."""
    if clock.timed:
        return BudgetBar(total=round(clock.budget), initial=round(clock.now), unit="s", disable=not master,
                         dynamic_ncols=True,
                         bar_format="{desc}{percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} s, {left} left{postfix}")
    return tqdm(total=args.epochs * steps_per_epoch, initial=round(start * steps_per_epoch), unit="step",
                disable=not master, dynamic_ncols=True)


def validate(model, data, args, device, world, epoch, train_loss, lr, t0, best):
    """Score the validation mixtures; the history record of this epoch (or point in it), and a line for the log."""
    t_val = time.time()
    val_loss, val_sdr, val_noisy, by_corpus = evaluate(model, data.val_loader, device, args, world, data.val_corpora,
                                                       data.corpora)
    record = dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_si_sdr=val_sdr,
                  val_noisy_si_sdr=val_noisy, val_si_sdr_by_corpus=by_corpus, lr=lr, seconds=time.time() - t0,
                  train_seconds=t_val - t0)
    line = (f"epoch {epoch:g}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, val SI-SDR {val_sdr:.2f} dB "
            f"(noisy {val_noisy:.2f}, {val_sdr - val_noisy:+.2f}){' *best*' if val_sdr > best else ''} "
            f"[{time.time() - t0:.0f} s]")
    if len(by_corpus) > 1:
        line += "; by corpus: " + ", ".join(f"{c} {v:.2f}" for c, v in by_corpus.items())
    return record, line


def write_epoch(paths, model, optimizer, scheduler, epoch, best, history, args, data_summary_, improved, compute):
    """The best checkpoint when this validation improved, the _last one always, the history and the curves."""
    if improved:
        save_run(paths.best, model, None, scheduler, epoch, best, history, args, data_summary_, compute)
    save_run(paths.last, model, optimizer, scheduler, epoch, best, history, args, data_summary_, compute)
    atomic_save(paths.history, lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))
    plot_history(history, paths.curves)


def stop_reason(args, position, history, best):
    """Why to stop after this validation (--patience, --stop-after), or None."""
    since_best = len(history) - 1 - max(i for i, h in enumerate(history) if h["val_si_sdr"] == best)
    if args.patience and since_best >= args.patience:
        return f"no better validation SI-SDR for {args.patience} validations: stopping early"
    if args.stop_after and position >= args.stop_after:
        return f"stopping after epoch {position:g} as asked; continue with --resume"
    return None


def check_ranks_agree(model, world, log):
    """Under torchrun every rank must hold the same weights: say so, so that nobody has to wonder."""
    import torch.distributed as dist
    total_abs = sum(p.detach().double().abs().sum().item() for p in model.parameters())
    sums = [None] * world
    dist.all_gather_object(sums, total_abs)
    log(f"weights identical on all {world} ranks: {len(set(sums)) == 1} (sum |w| = {total_abs:.10g})")
    dist.destroy_process_group()


def report_test(model, paths, args, data, device, best):
    """The figure a user wants: how much the best model improves the unseen test split."""
    if paths.best.exists() and read_manifest(args.data_dir, "test"):
        model.load_state_dict(load_checkpoint(paths.best)["model"])
        test_loader = DataLoader(MixtureDataset(args.data_dir, "test"), batch_size=args.batch_size,
                                 num_workers=data.workers)
        _, test_sdr, test_noisy = evaluate(model, test_loader, device, args)
        print(f"test SI-SDR: noisy {test_noisy:.2f} dB -> denoised {test_sdr:.2f} dB "
              f"(improvement {test_sdr - test_noisy:+.2f} dB) with the best checkpoint {paths.best}")
    if not paths.best.exists():  # a resumed run that never beat the best it started from
        print(f"no epoch beat the validation SI-SDR this run started from ({best:.2f} dB): no {paths.best} written")
    print("wrote " + ", ".join(str(p) for p in vars(paths).values() if p.exists()))


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = setup_distributed(args)
    master = rank == 0  # only rank 0 prints, writes checkpoints, history and plots
    log = (lambda line: tqdm.write(line)) if master else (lambda line: None)  # tqdm.write: below the progress bar
    torch.manual_seed(args.seed)
    paths = output_paths(args, master)
    ckpt, ckpt_path = resume_checkpoint(args, paths, log)
    data = load_data(args, rank, world, device)
    raw_model = make_model(args, ckpt, ckpt_path, data, device, log)
    amp_dtype = pick_precision(args.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    steps_per_epoch = math.ceil(len(epoch_order(data.train_set, 1, args, rank, world)) / args.batch_size)
    earlier = (ckpt or {}).get("compute", [])  # the sessions of this run before a --resume
    clock = Clock(args.time_budget, args.evals, 60 * sum(c["minutes"] for c in earlier), device, world,
                  args.session_minutes)
    optimizer, scheduler, start, best, history = build_optimizer(args, raw_model, ckpt, steps_per_epoch, clock, log)
    model = raw_model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        raw_model, device_ids=[device] if device.type == "cuda" else None)
    log_start(args, raw_model, data, device, world, amp_dtype, log)

    weights, bar = LossWeights.from_args(args), run_bar(args, clock, start, steps_per_epoch, master)
    running, n, t0 = torch.zeros((), device=device), 0, time.time()
    for position, noisy, voice in batch_stream(data, args, rank, world, device, start):
        running += train_step(model, noisy, voice, optimizer, scheduler, scaler, amp_dtype, weights, args) * len(noisy)
        n += len(noisy)
        clock.tick(len(noisy))  # before the scheduler's step: a --time-budget schedule reads the clock
        scheduler.step()
        bar.update(min(clock.now, bar.total) - bar.n if clock.timed else 1)
        bar.set_description(f"epoch {position:.2f}" if clock.timed else f"epoch {math.ceil(position)}/{args.epochs}", False)
        if clock.steps % 10 == 0:
            bar.set_postfix_str(f"loss {running.item() / n:.4f}")
        if not (clock.due() if clock.timed else position == int(position)):
            continue
        train_loss, n_all = all_sum([running.item(), n], device, world)
        record, line = validate(model, data, args, device, world, round(position, 3), train_loss / n_all,
                                scheduler.get_last_lr()[0], t0, best)
        history.append(record)
        improved, best = record["val_si_sdr"] > best, max(best, record["val_si_sdr"])
        log(line)
        if master:
            compute = earlier + [compute_record(clock, data, args, device, world, amp_dtype)]
            write_epoch(paths, raw_model, optimizer, scheduler, record["epoch"], best, history, args, data.summary,
                        improved, compute)
        clock.validated(time.time() - t0 - record["train_seconds"])
        running, n, t0 = torch.zeros((), device=device), 0, time.time()
        reason = (stop_reason(args, position, history, best) or (clock.up() and f"the {args.time_budget:g}-minute budget is spent")
                  or (clock.session_up() and f"this session's {args.session_minutes:g} minutes are spent "
                      f"({clock.now / 60:.0f} of the budget's {args.time_budget:g}): continue with --resume"))
        if reason:
            log(reason)
            break
    bar.close()

    if world > 1:
        check_ranks_agree(raw_model, world, log)
    if master:
        report_test(raw_model, paths, args, data, device, best)


if __name__ == "__main__":
    run_main(main)
