"""
Blend speech with noise into paired sets for training, validation and testing.

    python prepare_data.py                                  # demo corpus (built offline if data/ is empty)
    python prepare_data.py --speech-dir SPEECH --noise-dir NOISE

For every clip it writes data/processed/<split>/{noisy_voice,voice,noise}/<id>.wav (float32,
noisy == voice + noise exactly) and a 16-bit spectrogram PNG of each on the fixed dB scale
of audio.py, plus data/processed/manifest.csv and the settings in data/processed/config.json.

- Mixing is at a target SNR, 10 log10(sum voice^2 / sum noise^2), drawn from --snr-range,
  then the three signals share one gain that sets the mixture's level (--level-range).
- Splits are by speaker (one subfolder per speaker under the speech folder) or, with fewer
  than three speakers, by recording: chunks of one recording never land in two splits.
  Noise is split by recording too, so validation and test noise is unseen in training.
- Everything is drawn from --seed, so the same command gives the same set, and a re-run
  after an interruption completes the set instead of starting again.
"""
import argparse
import csv
import functools
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audio import (AudioConfig, UserError, find_audio, load_audio, mix, rms, run_main, save_png, spectrogram_db,
                   write_audio)

SPLITS = ("train", "val", "test")
KINDS = ("noisy_voice", "voice", "noise")
MANIFEST_FIELDS = ["id", "split", "speech_source", "speaker", "speech_start_s", "noise_source", "noise_category",
                   "noise_start_s", "snr_db", "level_db", "seconds"]
DEMO_DIR = Path("data/demo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--speech-dir", type=Path, help="folder tree of clean speech (subfolder per speaker); "
                   "default data/speech, or the demo corpus when that holds no audio")
    p.add_argument("--noise-dir", type=Path, help="folder tree of noise (subfolder = category); "
                   "default data/noise, or the demo corpus when that holds no audio")
    p.add_argument("--demo", action="store_true", help="use the built-in demo corpus even if data/ has audio")
    p.add_argument("--out", type=Path, default=Path("data/processed"), help="where the prepared set goes")
    p.add_argument("--clip-seconds", type=float, default=4.0, help="length of each mixture")
    p.add_argument("--snr-range", type=float, nargs=2, default=(-5.0, 15.0), metavar=("LO", "HI"), help="SNR in dB")
    p.add_argument("--level-range", type=float, nargs=2, default=(-35.0, -15.0), metavar=("LO", "HI"),
                   help="RMS level of the mixture in dBFS (its peak is kept under 0.99)")
    p.add_argument("--mixes-per-clip", type=int, default=2, help="mixtures made from each speech chunk")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of speakers/recordings for validation")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of speakers/recordings for testing")
    p.add_argument("--min-speech-fraction", type=float, default=0.4,
                   help="drop chunks where less than this share of 20 ms frames hold speech (energy VAD)")
    p.add_argument("--sample-rate", type=int, default=AudioConfig.sample_rate)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set made with other settings")
    args = p.parse_args(argv)
    lo, hi = args.snr_range
    if lo > hi or args.level_range[0] > args.level_range[1]:
        p.error("ranges are LO HI with LO <= HI")
    if args.clip_seconds <= 0 or args.mixes_per_clip < 1 or args.workers < 1:
        p.error("--clip-seconds, --mixes-per-clip and --workers must be positive")
    if not (0 <= args.val_fraction < 1 and 0 <= args.test_fraction < 1 and args.val_fraction + args.test_fraction < 1):
        p.error("--val-fraction and --test-fraction must be in [0, 1) and sum to less than 1")
    return args


# ----------------------------------------------------------------------------- corpora and splits
def resolve_corpora(args):
    """Pick the speech and noise folders: given ones, data/speech + data/noise, or the demo corpus."""
    speech, noise = args.speech_dir, args.noise_dir
    for flag, folder in (("--speech-dir", speech), ("--noise-dir", noise)):
        if folder is not None and not folder.is_dir():
            raise UserError(f"{flag} {folder} is not a folder")
    speech = speech or Path("data/speech")
    noise = noise or Path("data/noise")
    use_demo = args.demo or (args.speech_dir is None and not (speech.is_dir() and find_audio(speech))) \
        or (args.noise_dir is None and not (noise.is_dir() and find_audio(noise)))
    if use_demo:
        if args.speech_dir or args.noise_dir:
            print("note: --speech-dir/--noise-dir given but the demo corpus is used for the other one")
        if not (DEMO_DIR / "DEMO_CORPUS.txt").exists():
            import demo_corpus
            print(f"no speech/noise in data/: building the DEMO corpus in {DEMO_DIR} (synthetic, offline)")
            demo_corpus.build_demo_corpus(DEMO_DIR, sr=args.sample_rate, seed=args.seed)
        speech = args.speech_dir or DEMO_DIR / "speech"
        noise = args.noise_dir or DEMO_DIR / "noise"
    speech_files, noise_files = find_audio(speech), find_audio(noise)
    if not speech_files:
        raise UserError(f"no audio files in speech folder {speech}")
    if not noise_files:
        raise UserError(f"no audio files in noise folder {noise}")
    return speech, speech_files, noise, noise_files, use_demo


def label(path, root):
    """Speaker of a speech file / category of a noise file: its first subfolder, else None."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def split_groups(groups, val_frac, test_frac, rng):
    """Shuffle groups and cut them into train/val/test; val and test get at least one when possible."""
    groups = sorted(groups)
    rng.shuffle(groups)
    n = len(groups)
    n_test = max(1, round(test_frac * n)) if test_frac > 0 and n >= 3 else 0
    n_val = max(1, round(val_frac * n)) if val_frac > 0 and n >= 3 else 0
    return {"test": groups[:n_test], "val": groups[n_test:n_test + n_val], "train": groups[n_test + n_val:]}


def split_speech(files, root, args, rng):
    speakers = {f: label(f, root) for f in files}
    by_speaker = len({s for s in speakers.values() if s}) >= 3 and all(speakers.values())
    key = (lambda f: speakers[f]) if by_speaker else (lambda f: str(f))
    parts = split_groups({key(f) for f in files}, args.val_fraction, args.test_fraction, rng)
    where = {g: s for s, gs in parts.items() for g in gs}
    print(f"speech: {len(files)} files, split by {'speaker' if by_speaker else 'recording'}")
    return {s: [f for f in files if where[key(f)] == s] for s in SPLITS}


def split_noise(files, root, args, rng):
    """Split noise recordings per category (categories with >= 3 files), pooling the rest."""
    cats = {}
    for f in files:
        cats.setdefault(label(f, root) or "noise", []).append(f)
    out = {s: [] for s in SPLITS}
    pool = []
    for cat in sorted(cats):
        if len(cats[cat]) >= 3:
            parts = split_groups(cats[cat], args.val_fraction, args.test_fraction, rng)
            for s in SPLITS:
                out[s] += parts[s]
        else:
            pool += cats[cat]
    parts = split_groups(pool, args.val_fraction, args.test_fraction, rng)
    for s in SPLITS:
        out[s] = sorted(out[s] + parts[s])
    for s in SPLITS:
        if not out[s] and (s == "train" or getattr(args, f"{s}_fraction") > 0):
            raise UserError(f"too few noise recordings ({len(files)}) to give the {s} split its own")
    return out


# ----------------------------------------------------------------------------- chunking (VAD)
def speech_chunks(path, args):
    """Start samples of the clip-long chunks of one recording that hold enough speech."""
    audio, _ = load_audio(path, sr=args.sample_rate, mono=True)
    x = audio[0]
    clip = round(args.clip_seconds * args.sample_rate)
    frame = args.sample_rate // 50  # 20 ms
    n_frames = len(x) // frame
    if n_frames == 0:
        return []
    energy = 10 * np.log10(np.mean(x[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1) + 1e-12)
    active = energy > max(energy.max() - 40, -60)  # within 40 dB of the loudest frame, above -60 dBFS
    starts = []
    for start in range(0, len(x), clip):
        if len(x) - start < clip // 2:  # a tail under half a clip is dropped
            break
        a = active[start // frame:(start + clip) // frame]
        if a.size and a.sum() >= args.min_speech_fraction * (clip // frame):
            starts.append(start)
    return starts


# ----------------------------------------------------------------------------- mixing
@functools.lru_cache(maxsize=16)
def _load_mono(path, sr):
    return load_audio(path, sr=sr, mono=True)[0][0]


@functools.lru_cache(maxsize=16)
def _load_noise(path, sr):
    """A noise recording without the digital silence many clips are padded with (ESC-50 is)."""
    x = _load_mono(path, sr)
    loud = np.flatnonzero(np.abs(x) > 1e-4)
    return x[loud[0]:loud[-1] + 1] if loud.size else x[:0]


def noise_length(path, sr):
    return len(_load_noise(path, sr))


def noise_segment(noise, start, n):
    """n samples of a noise recording from start, moved on by a third of a clip while they are silent."""
    for k in range(12):
        seg = take(noise, (start + k * (n // 3)) % len(noise), n)
        if rms(seg) > 1e-5:
            return seg, (start + k * (n // 3)) % len(noise)
    raise UserError("noise recording is almost entirely silent")


def take(x, start, n):
    """n samples of x from start, looping x when it is too short (noise)."""
    if len(x) >= start + n:
        return x[start:start + n]
    reps = (start + n) // len(x) + 1
    return np.tile(x, reps)[start:start + n]


def make_item(job, out, args, cfg):
    """Write one triple of WAVs and PNGs (kept when all six exist); returns the noise start used."""
    paths = [out / job["split"] / kind / f"{job['id']}.{ext}" for kind in KINDS for ext in ("wav", "png")]
    clip = round(args.clip_seconds * args.sample_rate)
    voice = _load_mono(job["speech_path"], args.sample_rate)[job["speech_start"]:job["speech_start"] + clip]
    if len(voice) < clip:
        voice = np.pad(voice, (0, clip - len(voice)))
    noise, noise_start = noise_segment(_load_noise(job["noise_path"], args.sample_rate), job["noise_start"], clip)
    if all(p.exists() for p in paths):
        return noise_start
    for signal, kind in zip(mix(voice, noise, job["snr_db"], job["level_db"]), KINDS):
        folder = out / job["split"] / kind
        write_audio(folder / f"{job['id']}.wav", signal, args.sample_rate)
        save_png(spectrogram_db(signal, cfg), folder / f"{job['id']}.png", cfg)
    return noise_start


def plan(splits_speech, splits_noise, chunks, noise_len, speech_root, noise_root, args):
    """Decide every mixture up front (deterministic), so workers only execute."""
    jobs = []
    clip = round(args.clip_seconds * args.sample_rate)
    for si, split in enumerate(SPLITS):
        rng = np.random.default_rng([args.seed, si])
        noise_files = splits_noise[split]
        # pick a category first, then a recording, so a category with many files does not dominate
        by_cat = {}
        for f in noise_files:
            by_cat.setdefault(label(f, noise_root) or "noise", []).append(f)
        cats = sorted(by_cat)
        n = 0
        for f in splits_speech[split]:
            for start in chunks[f]:
                for _ in range(args.mixes_per_clip):
                    cat = cats[rng.integers(len(cats))]
                    nf = by_cat[cat][rng.integers(len(by_cat[cat]))]
                    nstart = int(rng.integers(noise_len[nf] - clip + 1 if noise_len[nf] >= clip else noise_len[nf]))
                    jobs.append(dict(
                        id=f"{split}_{n:05d}", split=split, speech_path=f, speech_start=start,
                        speech_source=str(f.relative_to(speech_root)), speaker=label(f, speech_root) or f.stem,
                        noise_path=nf, noise_start=nstart, noise_source=str(nf.relative_to(noise_root)),
                        noise_category=cat, snr_db=round(float(rng.uniform(*args.snr_range)), 2),
                        level_db=round(float(rng.uniform(*args.level_range)), 2)))
                    n += 1
    return jobs


def _init_worker():
    import torch
    torch.set_num_threads(1)


def run_parallel(fn, items, workers, desc):
    if workers == 1:
        return [fn(i) for i in tqdm(items, desc=desc)]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(fn, items, chunksize=4), total=len(items), desc=desc))


# ----------------------------------------------------------------------------- main
def check_existing(out, settings, overwrite):
    """Resume a set made with the same settings; refuse to mix with another unless --overwrite."""
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        if out.exists() and any((out / s).exists() for s in SPLITS):
            if not overwrite:
                raise UserError(f"{out} holds a prepared set without config.json; pass --overwrite to replace it")
            for s in SPLITS:
                shutil.rmtree(out / s, ignore_errors=True)
        return
    old = json.loads(cfg_path.read_text())
    if old == settings:
        print(f"{out} was prepared with the same settings: completing it")
        return
    if not overwrite:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise UserError(f"{out} was prepared with other settings ({', '.join(diff)}); "
                        "pass --overwrite to replace it, or choose another --out")
    for s in SPLITS:
        shutil.rmtree(out / s, ignore_errors=True)
    for name in ("manifest.csv", "config.json"):
        (out / name).unlink(missing_ok=True)


def main(argv=None):
    args = parse_args(argv)
    cfg = AudioConfig(sample_rate=args.sample_rate)
    speech_root, speech_files, noise_root, noise_files, demo = resolve_corpora(args)
    settings = dict(audio=cfg.to_dict(), demo=demo, speech_dir=str(speech_root), noise_dir=str(noise_root),
                    n_speech_files=len(speech_files), n_noise_files=len(noise_files),
                    **{k: v for k, v in vars(args).items()
                       if k not in ("speech_dir", "noise_dir", "out", "workers", "overwrite", "demo")})
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they read back
    out = args.out
    check_existing(out, settings, args.overwrite)

    rng = np.random.default_rng(args.seed)
    speech = split_speech(speech_files, speech_root, args, rng)
    noise = split_noise(noise_files, noise_root, args, rng)
    all_speech = [f for s in SPLITS for f in speech[s]]
    chunk_lists = run_parallel(functools.partial(speech_chunks, args=args), all_speech, args.workers, "finding speech")
    chunks = dict(zip(all_speech, chunk_lists))
    print(f"{sum(map(len, chunk_lists))} speech chunks of {args.clip_seconds:g} s kept "
          f"({sum(1 for c in chunk_lists if not c)} recordings too short or silent)")
    noise_lens = run_parallel(functools.partial(noise_length, sr=args.sample_rate), noise_files, args.workers,
                              "reading noise")
    noise_len = dict(zip(noise_files, noise_lens))
    for s in SPLITS:
        noise[s] = [f for f in noise[s] if noise_len[f] > 0]
    jobs = plan(speech, noise, chunks, noise_len, speech_root, noise_root, args)
    for s in SPLITS:
        if not any(j["split"] == s for j in jobs) and (s == "train" or getattr(args, f"{s}_fraction") > 0):
            raise UserError(f"the {s} split got no speech: give more speakers/recordings or change the fractions")

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(settings, indent=2))
    for s in SPLITS:
        for kind in KINDS:
            (out / s / kind).mkdir(parents=True, exist_ok=True)
    starts = run_parallel(functools.partial(make_item, out=out, args=args, cfg=cfg), jobs, args.workers, "mixing")

    rows = []
    clip_s = round(args.clip_seconds * args.sample_rate) / args.sample_rate
    for j, noise_start in zip(jobs, starts):
        j["noise_start"] = noise_start
        rows.append(dict(id=j["id"], split=j["split"], speech_source=j["speech_source"], speaker=j["speaker"],
                         speech_start_s=round(j["speech_start"] / args.sample_rate, 4), noise_source=j["noise_source"],
                         noise_category=j["noise_category"], noise_start_s=round(j["noise_start"] / args.sample_rate, 4),
                         snr_db=j["snr_db"], level_db=j["level_db"], seconds=clip_s))
    tmp = out / "manifest.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "manifest.csv")
    counts = ", ".join(f"{s} {sum(r['split'] == s for r in rows)}" for s in SPLITS)
    tag = " (DEMO corpus)" if demo else ""
    print(f"wrote {len(rows)} mixtures to {out}{tag}: {counts}")


if __name__ == "__main__":
    run_main(main)
