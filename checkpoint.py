"""
Checkpoints: the one place that writes, reads, checks and describes them.

A checkpoint is a dict saved with torch.save that weights_only loading reads:
    model       the weights (float32, on the CPU)
    model_args  unet.ModelConfig as a dict (architecture, floor, level, subtraction)
    audio       audio.AudioConfig as a dict (sample rate, STFT)
and, from train.py, the training run: epoch, best_val_si_sdr, history, config (every flag),
data (what it learned from), code_version, scheduler (and optimizer in the _last checkpoint);
from average.py, data and averaged_from (the runs whose weights it averages).

    python checkpoint.py models/unet.pt      # what a model is and what it learned from
"""
from pathlib import Path

import torch

from audio import DEFAULT_MODEL, UserError, arg_parser, atomic_save, run_main
from unet import build_model, describe


def save_checkpoint(path, model, **extra):
    """Write model (weights, ModelConfig, AudioConfig) and the extra entries to path, atomically."""
    state = dict(model={k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},  # loads anywhere
                 model_args=model.config.to_dict(), audio=model.audio.to_dict(), **extra)
    atomic_save(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path):
    """Read a checkpoint of this repo, with a one-line error for anything else."""
    path = Path(path)
    if not path.exists():
        if path == DEFAULT_MODEL:
            raise UserError(f"no model at {path}: restore the pretrained one (git checkout models/unet.pt), "
                            "or train one with `python prepare_data.py && python train.py` and pass --model PATH")
        raise UserError(f"no model at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    missing = [k for k in ("model", "model_args", "audio") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"{path} is not a checkpoint of this repo (missing {', '.join(missing)})")
    return ckpt


def model_from_checkpoint(ckpt, path, device="cpu"):
    """The denoiser a checkpoint read by load_checkpoint describes, in eval mode."""
    try:
        model = build_model(ckpt["model_args"], ckpt["audio"])
        model.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
    except (TypeError, RuntimeError, ValueError) as e:
        detail = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = detail[1] if len(detail) > 1 else detail[0]  # the first mismatch, not PyTorch's heading
        raise UserError(f"{path} does not match this code's model ({detail[:200]})") from None
    return model.to(device).eval()


def load_model(path, device="cpu"):
    return model_from_checkpoint(load_checkpoint(path), path, device)


def lineage(ckpt, path):
    """The runs a new run started from (--init-from path): the checkpoint's own lineage, then the checkpoint
    itself, each as its path, epoch, validation score, code version and what it learned from (ckpt["data"])."""
    cfg, data = ckpt.get("config", {}), dict(ckpt.get("data") or {})
    earlier = data.pop("started_from", [])
    return earlier + [dict(path=str(path), epoch=ckpt.get("epoch"), epochs=cfg.get("epochs"),
                           best_val_si_sdr=ckpt.get("best_val_si_sdr"), code_version=ckpt.get("code_version"),
                           data=data, compute=ckpt.get("compute", []))]


def compute_summary(sessions):
    """ckpt["compute"] (train.py: a record per training session) in a few words: where, how long, how much audio;
    with several sessions, their sum first."""
    each = "; ".join(f"{c['minutes']:g} min on {c['device']}" + (f" x {c['processes']}" if c["processes"] > 1 else "")
                     + f" ({c['precision']}, {c['steps']} steps, {c['audio_hours']:g} h of audio)" for c in sessions)
    if len(sessions) < 2:
        return each
    return (f"{sum(c['minutes'] for c in sessions):g} min and {sum(c['audio_hours'] for c in sessions):.3g} h of audio "
            f"in {len(sessions)} sessions: {each}")


def run_summary(run):
    """One run of lineage() (or of ckpt["averaged_from"]) in a few words: epoch, validation score, code."""
    return (f"epoch {run.get('epoch')} of {run.get('epochs')}, best validation SI-SDR "
            f"{run.get('best_val_si_sdr') or float('nan'):.2f} dB, code {run.get('code_version')}")


def format_flags(flags):
    """{"seed": 4, "noise_weights": ["noise=10"]} -> "seed 4, noise_weights noise=10"."""
    return ", ".join(f"{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in flags.items()) or "defaults"


def describe_checkpoint(ckpt, path):
    """A few lines on a checkpoint: architecture, training run, and the data it learned from (ckpt["data"])."""
    cfg, data = ckpt.get("config", {}), ckpt.get("data")
    lines = [f"{path}: {describe(model_from_checkpoint(ckpt, path))}", f"audio: {ckpt['audio']}"]
    if "averaged_from" in ckpt:  # average.py: the mean of several runs' weights
        runs = ckpt["averaged_from"]
        flags = [{k: c[k] for k in c.get("given", ()) if k in c and k not in ("out", "init_from", "resume", "data_dir")}
                 for c in (run.get("config") or {} for run in runs)]  # what each run's command line set
        common = {k: v for k, v in flags[0].items() if all(k in f and str(f[k]) == str(v) for f in flags)}
        lines.append(f"weights: the average of {len(runs)} checkpoints"
                     + (f", each trained with {format_flags(common)}" if common else ""))
        for run, f in zip(runs, flags):
            origin = f"; from {run['started_from'][-1]}" if run.get("started_from") else ""
            lines.append(f"  {run['path']}: {run_summary(run)}{origin}; "
                         f"{format_flags({k: v for k, v in f.items() if k not in common})}")
        if "batchnorm_from" in ckpt:
            bn = ckpt["batchnorm_from"]
            lines.append(f"BatchNorm statistics: re-estimated on {bn['mixtures']} training mixtures of {bn['data_dir']}")
    else:
        span = f"a {cfg['time_budget']:g}-minute budget" if cfg.get("time_budget") else cfg.get("epochs")
        lines.append(f"trained: epoch {ckpt.get('epoch')} of {span}, best validation SI-SDR "
                     f"{ckpt.get('best_val_si_sdr', float('nan')):.2f} dB, code {ckpt.get('code_version', 'unknown')}")
    if ckpt.get("compute"):
        lines.append(f"compute: {compute_summary(ckpt['compute'])}")
    if "trained_floor_db" in ckpt:
        lines.append(f"floor: tuned to {ckpt['model_args']['floor_db']:g} dB (trained at {ckpt['trained_floor_db']:g})")
    if not data:
        return "\n".join(lines + ["data: not recorded (a checkpoint from before ckpt['data'])"])
    fmt = lambda v: "?" if v is None else v
    lines += [f"speech: {', '.join(data.get('speech_dirs') or ['?'])}",
              f"noise: {', '.join(data.get('noise_dirs') or ['?'])}",
              f"training split: {fmt(data.get('n_speakers'))} speakers, {fmt(data.get('n_speech_files'))} speech "
              f"recordings ({fmt(data.get('speech_minutes'))} min), {fmt(data.get('n_noise_files'))} noise recordings "
              f"({fmt(data.get('noise_minutes'))} min)"]
    for name, c in (data.get("corpora") or {}).items():
        lines.append(f"  {name}: {c['n_speakers']} speakers, {c['n_speech_files']} recordings, {c['speech_minutes']} min")
    if cfg.get("corpus_weights"):
        lines.append(f"corpus weights: {' '.join(cfg['corpus_weights'])}")
    if cfg.get("noise_weights"):
        lines.append(f"noise weights: {' '.join(cfg['noise_weights'])}")
    if cfg.get("noise_mix_prob"):
        lines.append(f"two noise recordings in {cfg['noise_mix_prob']:.0%} of the training mixtures")
    if cfg.get("speed_prob"):
        lines.append(f"voices and noises played up to 10% faster or slower in {cfg['speed_prob']:.0%} of the draws")
    lines.append(f"prepared set: {data.get('data_dir')} (manifest.csv MD5 {data.get('manifest_md5')})")
    for run in data.get("started_from", []):  # a fine-tuned model also learned from the runs it started from
        d = run.get("data") or {}
        lines.append(f"started from: {run['path']}, {run_summary(run)}; "
                     f"trained on {d.get('data_dir', '?')} ({fmt(d.get('speech_minutes'))} min of speech, "
                     f"{fmt(d.get('noise_minutes'))} min of noise)"
                     + (f"; {compute_summary(run['compute'])}" if run.get("compute") else ""))
    return "\n".join(lines)


def main(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL, help="checkpoint (default: the pretrained model)")
    args = p.parse_args(argv)
    print(describe_checkpoint(load_checkpoint(args.model), args.model))


if __name__ == "__main__":
    run_main(main)
