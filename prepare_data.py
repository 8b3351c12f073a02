"""
Blend speech with noise into paired sets for training, validation and testing.

    python prepare_data.py                                  # demo corpus (built offline if data/ is empty)
    python prepare_data.py --speech-dir SPEECH --noise-dir NOISE

For every clip it writes data/processed/<split>/{noisy_voice,voice,noise}/<id>.wav (float32,
noisy == voice + noise exactly) and a 16-bit spectrogram PNG of each on the fixed dB scale
of audio.py, plus data/processed/manifest.csv and the settings in data/processed/config.json.

- Mixing is at a target SNR, 10 log10(sum voice^2 / sum noise^2), drawn from --snr-range,
  then the three signals share one gain that sets the mixture's level (--level-range).
- Recordings whose decoded audio is identical (the same recording under two names or folders,
  digital silence at the ends ignored) are found by hashing their samples; one copy is kept.
- Each speech corpus (a --speech-dir, or with --speech-labels/--speaker-regex each top-level
  subfolder of it) is split by speaker when it has at least three, else by recording: one
  Hindi voice beside many English ones stays in training. Chunks of one recording never land
  in two splits. Noise is split by recording too (ESC-50 by fold), so validation and test
  noise is unseen in training.
- Everything is drawn from --seed, so the same command gives the same set, and a re-run
  after an interruption completes the set instead of starting again.
"""
import csv
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audio import (arg_parser, NEEDS_FFMPEG, AudioConfig, UserError, atomic_save, find_audio, load_audio, mix, rms, run_main, save_png, spectrogram_db,
                   write_audio)

SPLITS = ("train", "val", "test")
KINDS = ("noisy_voice", "voice", "noise")
MANIFEST_FIELDS = ["id", "split", "corpus", "speech_source", "speaker", "speech_start_s", "noise_source", "noise_category",
                   "noise_start_s", "snr_db", "level_db", "seconds"]
DEMO_DIR = Path("data/demo")
ESC50_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("--speech-dir", type=Path, nargs="+", help="folder tree(s) of clean speech (subfolder per "
                   "speaker); default data/speech, or the demo corpus when that holds no audio")
    p.add_argument("--noise-dir", type=Path, nargs="+", help="folder tree(s) of noise (subfolder = category), e.g. "
                   "real noise and data/demo/noise together; default data/noise, or the demo corpus")
    p.add_argument("--demo", action="store_true", help="use the built-in demo corpus even if data/ has audio")
    p.add_argument("--speech-labels", type=Path, nargs="+", help="CSV(s) with 'file' and 'speaker' columns (paths "
                   "relative to the CSV or a speech folder), for corpora that keep speakers in metadata; one per "
                   "--speech-dir when there are several")
    p.add_argument("--speaker-regex", help="regex whose first group is the speaker in a file name, e.g. '^([^_]+)_'")
    p.add_argument("--noise-labels", type=Path, help="CSV with 'file' and 'category' columns for the noise")
    p.add_argument("--noise-categories", nargs="+", metavar="CAT", help="use only these noise categories")
    p.add_argument("--exclude-categories", nargs="+", metavar="CAT", help="leave out these noise categories")
    p.add_argument("--val-folds", type=int, nargs="+", default=[4], help="ESC-50 folds for validation noise")
    p.add_argument("--test-folds", type=int, nargs="+", default=[5], help="ESC-50 folds for test noise")
    p.add_argument("--download-esc50", type=Path, metavar="DIR", help="download and unpack ESC-50 into DIR "
                   "(resumable) and use it as the noise folder unless --noise-dir is given")
    p.add_argument("--esc50-url", default=ESC50_URL, help="where --download-esc50 fetches the archive")
    p.add_argument("--esc50-sha256", help="expected SHA-256 of the archive (checked when given)")
    p.add_argument("--out", type=Path, default=Path("data/processed"), help="where the prepared set goes")
    p.add_argument("--clip-seconds", type=float, default=4.0, help="length of each mixture")
    p.add_argument("--min-recording-seconds", type=float, default=1.0,
                   help="a recording shorter than a clip but at least this long gives one chunk, padded with silence")
    p.add_argument("--snr-range", type=float, nargs=2, default=(-5.0, 15.0), metavar=("LO", "HI"), help="SNR in dB")
    p.add_argument("--level-range", type=float, nargs=2, default=(-35.0, -15.0), metavar=("LO", "HI"),
                   help="RMS level of the mixture in dBFS (its peak is kept under 0.99)")
    p.add_argument("--mixes-per-clip", type=int, default=2, help="mixtures made from each speech chunk")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of speakers/recordings for validation")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of speakers/recordings for testing")
    p.add_argument("--min-speech-fraction", type=float, default=0.4,
                   help="drop chunks where less than this share of 20 ms frames hold speech (energy VAD)")
    p.add_argument("--sample-rate", type=int, default=AudioConfig.sample_rate, help="rate of the prepared set (Hz)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the mixing (same seed, same set)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set made with other settings")
    args = p.parse_args(argv)
    lo, hi = args.snr_range
    if lo > hi or args.level_range[0] > args.level_range[1]:
        p.error("ranges are LO HI with LO <= HI")
    if args.clip_seconds <= 0 or args.mixes_per_clip < 1 or args.workers < 1 or args.min_recording_seconds < 0:
        p.error("--clip-seconds, --mixes-per-clip and --workers must be positive")
    if not (0 <= args.val_fraction < 1 and 0 <= args.test_fraction < 1 and args.val_fraction + args.test_fraction < 1):
        p.error("--val-fraction and --test-fraction must be in [0, 1) and sum to less than 1")
    return args


# ----------------------------------------------------------------------------- corpora and labels
def resolve_corpora(args):
    """Pick the speech and noise folders: given ones, data/speech + data/noise, or the demo corpus."""
    speech, noise = args.speech_dir, args.noise_dir
    if args.download_esc50:
        noise = noise or [args.download_esc50]
    for flag, folders in (("--speech-dir", speech), ("--noise-dir", noise)):
        for folder in folders or ():
            if not folder.is_dir() and DEMO_DIR not in folder.parents:  # the demo is built on demand
                raise UserError(f"{flag} {folder} is not a folder")
    empty = lambda d: not (d.is_dir() and find_audio(d))
    use_demo_speech = args.demo or (speech is None and empty(Path("data/speech")))
    use_demo_noise = args.demo or (noise is None and empty(Path("data/noise")))
    speech = [DEMO_DIR / "speech"] if use_demo_speech else speech or [Path("data/speech")]
    noise = [DEMO_DIR / "noise"] if use_demo_noise else noise or [Path("data/noise")]
    demo = use_demo_speech or use_demo_noise or any(DEMO_DIR in d.parents for d in speech + noise)
    if demo and not (DEMO_DIR / "DEMO_CORPUS.txt").exists():
        import demo_corpus
        print(f"building the DEMO corpus in {DEMO_DIR} (synthetic, offline)")
        demo_corpus.build_demo_corpus(DEMO_DIR, sr=args.sample_rate, seed=args.seed)
    if use_demo_speech or use_demo_noise:
        print(f"no {' or '.join(n for n, u in (('speech', use_demo_speech), ('noise', use_demo_noise)) if u)} in data/: "
              "using the DEMO corpus")
    return speech, noise, demo


def gather(roots, what):
    """{file: root} over several folders."""
    return {f: root for root in roots for f in usable_audio(root, what)}


def usable_audio(folder, what):
    """Audio files under folder; formats that need ffmpeg are skipped, with one warning, when it is missing."""
    files = find_audio(folder)
    if not shutil.which("ffmpeg"):
        skipped = [f for f in files if f.suffix.lower() in NEEDS_FFMPEG]
        if skipped:
            kinds = ", ".join(sorted({f.suffix.lower() for f in skipped}))
            print(f"warning: skipping {len(skipped)} {kinds} {what} files: ffmpeg is not on the PATH to decode them")
            files = [f for f in files if f.suffix.lower() not in NEEDS_FFMPEG]
    if not files:
        raise UserError(f"no audio files in {what} folder {folder}")
    return files


def first_subfolder(path, root):
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def read_labels(csv_path, column, roots):
    """{file: label} from a CSV with a `file` (or `filename`) column; paths relative to any of roots."""
    if not Path(csv_path).is_file():
        raise UserError(f"no such labels file: {csv_path}")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    name_col = next((c for c in ("file", "filename", "path") if rows and c in rows[0]), None)
    if name_col is None or column not in rows[0]:
        raise UserError(f"{csv_path} needs a 'file' and a '{column}' column")
    labels = {}
    for r in rows:
        for root in roots:
            p = (Path(root) / r[name_col]).resolve()
            if p.exists():
                labels[p] = r[column]
                break
    return labels


def speakers_of(files, root, args):
    """Speaker of each speech file: --speech-labels CSV, else its subfolder, else --speaker-regex on the name."""
    if args.speech_labels:
        labels = {f: spk for csv_path in args.speech_labels
                  for f, spk in read_labels(csv_path, "speaker", [csv_path.parent, root]).items()}
        return {f: labels.get(f.resolve()) for f in files}
    if args.speaker_regex:
        pattern = re.compile(args.speaker_regex)
        found = {f: pattern.search(f.name) for f in files}
        return {f: (m.group(1) if m and m.groups() else m.group(0) if m else None) for f, m in found.items()}
    return {f: first_subfolder(f, root) for f in files}


def esc50_meta(root):
    """{file: (category, fold)} when root is ESC-50 as downloaded (audio/*.wav, meta/esc50.csv)."""
    meta = Path(root) / "meta" / "esc50.csv"
    if not (meta.is_file() and (Path(root) / "audio").is_dir()):
        return None
    with open(meta, newline="") as fh:
        return {(Path(root) / "audio" / r["filename"]).resolve(): (r["category"], int(r["fold"]))
                for r in csv.DictReader(fh)}


def noise_labels(files, root, args):
    """{file: category} and {file: ESC-50 fold or None} for the noise files of one folder."""
    esc = esc50_meta(root)
    if esc is not None:
        files = [f for f in files if f.resolve() in esc]
        cats = {f: esc[f.resolve()][0] for f in files}
        folds = {f: esc[f.resolve()][1] for f in files}
        print(f"noise: ESC-50 layout, {len(set(cats.values()))} categories, split by fold "
              f"(val {args.val_folds}, test {args.test_folds})")
    else:
        if args.noise_labels:
            labels = read_labels(args.noise_labels, "category", [args.noise_labels.parent, root])
            cats = {f: labels.get(f.resolve()) or first_subfolder(f, root) or "noise" for f in files}
        else:
            cats = {f: first_subfolder(f, root) or "noise" for f in files}
        folds = {f: None for f in files}
    return cats, folds


def download_esc50(dest, url=ESC50_URL, sha256=None):
    """Fetch ESC-50 into dest (audio/, meta/), resuming a partial download where the server allows.

    The archive grows as dest/ESC-50.zip.part and is unpacked only once complete and verified;
    meta/ is moved in last, so a folder without meta/esc50.csv is never taken for a finished one.
    """
    dest = Path(dest)
    if esc50_meta(dest) is not None:
        print(f"ESC-50 is already in {dest}")
        return
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / "ESC-50.zip.part"
    fetch_resumable(url, part)
    if sha256:
        check_sha256(part, sha256)
    unpack_esc50(part, dest, url)
    meta = esc50_meta(dest)
    missing = [f for f in meta if not f.exists()]
    if missing:
        raise UserError(f"ESC-50 in {dest} lacks {len(missing)} files listed in meta/esc50.csv")
    print(f"ESC-50: {len(meta)} clips in {dest}")


def fetch_resumable(url, part):
    """Download url into part, appending to what an earlier run left there when the server honours a Range."""
    have = part.stat().st_size if part.exists() else 0
    try:
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            resp = urllib.request.urlopen(req, timeout=60)
        except urllib.error.HTTPError as e:
            if e.code != 416:  # 416: the range is past the end; start again from scratch
                raise
            have, resp = 0, urllib.request.urlopen(url, timeout=60)
        if have and resp.status != 206:  # the server ignored the range: restart cleanly
            have = 0
        size = resp.headers.get("Content-Length")
        total = int(size) + have if size else None
        with resp, open(part, "ab" if have else "wb") as fh, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc="downloading ESC-50") as bar:
            while chunk := resp.read(1 << 16):
                fh.write(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"downloading {url} failed ({getattr(e, 'reason', e)}); run again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise UserError(f"download stopped at {part.stat().st_size} of {total} bytes; run again to resume")


def check_sha256(part, sha256):
    """Delete the archive and stop when its SHA-256 is not the expected one (a new run downloads it afresh)."""
    digest = hashlib.sha256(part.read_bytes()).hexdigest()
    if digest != sha256.lower():
        part.unlink()
        raise UserError(f"ESC-50 archive has SHA-256 {digest}, expected {sha256}; deleted it, run again")


def unpack_esc50(part, dest, url):
    """Unpack the archive into dest/.unpacking, move its audio/ and then meta/ into dest, delete the archive."""
    try:
        with zipfile.ZipFile(part) as zf:
            if zf.testzip() is not None:
                raise zipfile.BadZipFile("CRC error")
            tmp = dest / ".unpacking"
            shutil.rmtree(tmp, ignore_errors=True)
            zf.extractall(tmp)
    except zipfile.BadZipFile as e:
        part.unlink()
        raise UserError(f"the ESC-50 archive is corrupt ({e}); deleted it, run again") from None
    top = next((m.parent.parent for m in tmp.rglob("meta/esc50.csv")), None)
    if top is None or not (top / "audio").is_dir():
        raise UserError(f"the archive from {url} has no audio/ and meta/esc50.csv")
    shutil.rmtree(dest / "audio", ignore_errors=True)
    os.replace(top / "audio", dest / "audio")
    os.replace(top / "meta", dest / "meta")  # last: its presence marks the download complete
    shutil.rmtree(tmp)
    part.unlink()


def select_categories(cats, folds, args):
    """Apply --noise-categories / --exclude-categories."""
    keep = set(cats.values())
    if args.noise_categories:
        unknown = set(args.noise_categories) - keep
        if unknown:
            raise UserError(f"no noise of categories {sorted(unknown)}; there are: {', '.join(sorted(keep))}")
        keep &= set(args.noise_categories)
    keep -= set(args.exclude_categories or ())
    cats = {f: c for f, c in cats.items() if c in keep}
    if not cats:
        raise UserError("the category selection leaves no noise recordings")
    return cats, {f: folds[f] for f in cats}


# ----------------------------------------------------------------------------- splits
def split_groups(groups, val_frac, test_frac, rng):
    """Shuffle groups and cut them into train/val/test; val and test get at least one when possible."""
    groups = sorted(groups)
    rng.shuffle(groups)
    n = len(groups)
    n_test = max(1, round(test_frac * n)) if test_frac > 0 and n >= 3 else 0
    n_val = max(1, round(val_frac * n)) if val_frac > 0 and n >= 3 else 0
    return {"test": groups[:n_test], "val": groups[n_test:n_test + n_val], "train": groups[n_test + n_val:]}


def corpora_of(files, root_of, speakers, args):
    """{file: corpus}: each --speech-dir is a corpus; with speaker labels (--speech-labels or --speaker-regex),
    each top-level subfolder of a folder is one (speech/hsc_00C, speech/librispeech, speech_pack/ljspeech, ...),
    unless every such subfolder holds a single speaker (a folder per speaker): then the folder itself is the corpus."""
    corpus = {f: root_of[f].name for f in files}
    if args.speech_labels or args.speaker_regex:
        for root in set(root_of.values()):
            sub = {f: first_subfolder(f, root) or root.name for f in files if root_of[f] == root}
            voices = {}
            for f, name in sub.items():
                voices.setdefault(name, set()).add(speakers[f])
            if any(len(v) > 1 for v in voices.values()):
                corpus.update(sub)
    return corpus


def group_rng(args, name):
    """The random stream that splits one corpus (or noise group), from --seed and its name alone: adding or
    removing another corpus leaves this one's split as it was."""
    return np.random.default_rng([args.seed, int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "little")])


def split_speech(speakers, corpus, args):
    """Per corpus: by speaker when it has at least three, all known, else by recording (one voice stays in
    every split). A speaker found in two corpora lands in one split."""
    files = sorted(speakers)
    where, parts = {}, {s: [] for s in SPLITS}
    for name in sorted(set(corpus.values())):
        mine = [f for f in files if corpus[f] == name]
        by_speaker = len({speakers[f] for f in mine}) >= 3 and all(speakers[f] for f in mine)
        key = (lambda f: ("speaker", speakers[f])) if by_speaker else (lambda f: ("recording", str(f)))
        new = split_groups({key(f) for f in mine} - set(where), args.val_fraction, args.test_fraction,
                           group_rng(args, f"speech/{name}"))
        where.update({g: s for s, gs in new.items() for g in gs})
        for f in mine:
            parts[where[key(f)]].append(f)
        counts = ", ".join(f"{s} {sum(corpus[f] == name for f in parts[s])}" for s in SPLITS)
        print(f"speech: {name}: {len(mine)} recordings of {len({speakers[f] for f in mine})} speakers, split by "
              f"{'speaker' if by_speaker else 'recording'} ({counts})")
    return parts


def split_noise(cats, folds, args, root_of):
    """ESC-50 clips by fold; other recordings per category (those with >= 3 recordings), pooling the rest of
    each noise folder."""
    out = {s: [] for s in SPLITS}
    by_cat = {}
    for f in sorted(cats):
        if folds[f] is not None:
            out["test" if folds[f] in args.test_folds else "val" if folds[f] in args.val_folds else "train"].append(f)
        else:
            by_cat.setdefault(cats[f], []).append(f)
    groups = {}
    for cat in sorted(by_cat):
        for f in by_cat[cat]:  # a category of its own, or the pool of its folder's small categories
            groups.setdefault(f"noise/{cat}" if len(by_cat[cat]) >= 3 else f"pool/{root_of[f]}", []).append(f)
    for name, files in sorted(groups.items()):
        parts = split_groups(files, args.val_fraction, args.test_fraction, group_rng(args, name))
        for s in SPLITS:
            out[s] += parts[s]
    return {s: sorted(out[s]) for s in SPLITS}


# ----------------------------------------------------------------------------- chunking (VAD)
def speech_chunks(path, args):
    """(start samples of the clip-long chunks that hold enough speech, seconds, content hash); None if unreadable."""
    try:
        x = load_audio(path, sr=args.sample_rate, mono=True)[0][0]
    except UserError:
        return None
    return find_speech(x, args), len(x) / args.sample_rate, content_hash(x)


def content_hash(x):
    """A fingerprint of decoded audio: equal for the same recording under another name or format.

    Samples are rounded to 16 bits and digital silence at either end is ignored, so a copy that
    lost its zero padding, or was written as float instead of PCM, still matches."""
    q = np.round(np.asarray(x, dtype=np.float64) * 32768).astype(np.int32)
    loud = np.flatnonzero(np.abs(q) > 3)  # about 1e-4 of full scale
    q = q[loud[0]:loud[-1] + 1] if loud.size else q[:0]
    return hashlib.sha1(q.tobytes()).hexdigest()


def drop_copies(files_hash, what):
    """{file: hash} -> the files to keep (one per distinct hash, first by path) and {copy: file kept}."""
    kept, copies = {}, {}
    for f in sorted(files_hash):
        h = files_hash[f]
        if h in kept:
            copies[f] = kept[h]
        else:
            kept[h] = f
    if copies:
        shown = "; ".join(f"{c} = {k}" for c, k in list(copies.items())[:3])
        print(f"{what}: {len(copies)} recordings repeat another's audio under another name: kept one copy of each "
              f"({shown}{' ...' if len(copies) > 3 else ''})")
    else:
        print(f"{what}: no two recordings hold the same audio")
    return copies


def find_speech(x, args):
    """Start samples of the clip-long chunks of x that hold speech in at least --min-speech-fraction of their 20 ms
    frames; a recording shorter than a clip (and at least --min-recording-seconds) is one chunk, padded later."""
    clip = round(args.clip_seconds * args.sample_rate)
    frame = args.sample_rate // 50  # 20 ms
    n_frames = len(x) // frame
    if n_frames == 0:
        return []
    energy = 10 * np.log10(np.mean(x[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1) + 1e-12)
    active = energy > max(energy.max() - 40, -60)  # within 40 dB of the loudest frame, above -60 dBFS
    if len(x) < clip:  # a short recording (many utterances are 2-4 s): one chunk, judged on its own length
        long_enough = len(x) >= args.min_recording_seconds * args.sample_rate
        return [0] if long_enough and active.sum() >= args.min_speech_fraction * n_frames else []
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
    """(samples of sound in a noise recording at sr, content hash); (-1, None) if it cannot be read."""
    try:
        x = _load_noise(path, sr)
    except UserError:
        return -1, None
    return len(x), content_hash(x)


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


def source_name(path, root_of):
    """A file's name in the manifest: relative to its folder (prefixed by the folder when there are several)."""
    rel = path.relative_to(root_of[path]).as_posix()
    return f"{root_of[path].name}/{rel}" if len(set(root_of.values())) > 1 else rel


def plan(speech, noise, chunks, noise_len, speakers, corpus, cats, speech_root_of, noise_root_of, args):
    """Decide every mixture up front (deterministic), so workers only execute."""
    jobs = []
    clip = round(args.clip_seconds * args.sample_rate)
    for si, split in enumerate(SPLITS):
        rng = np.random.default_rng([args.seed, si])
        n = 0
        for f in speech[split]:
            for start in chunks[f]:
                for _ in range(args.mixes_per_clip):
                    nf = noise[split][rng.integers(len(noise[split]))]
                    nstart = int(rng.integers(noise_len[nf] - clip + 1 if noise_len[nf] >= clip else noise_len[nf]))
                    jobs.append(dict(
                        id=f"{split}_{n:05d}", split=split, corpus=corpus[f], speech_path=f, speech_start=start,
                        speech_source=source_name(f, speech_root_of), speaker=speakers[f] or f.stem,
                        noise_path=nf, noise_start=nstart, noise_source=source_name(nf, noise_root_of),
                        noise_category=cats[nf], snr_db=round(float(rng.uniform(*args.snr_range)), 2),
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


def read_recordings(speech_files, noise_files, args):
    """Read every recording once: speech chunks that hold speech and noise lengths, minus unreadable files and
    copies of other recordings (by content). Returns {file: chunk starts}, {file: seconds}, {file: samples}."""
    found = run_parallel(functools.partial(speech_chunks, args=args), speech_files, args.workers, "finding speech")
    lengths = run_parallel(functools.partial(noise_length, sr=args.sample_rate), noise_files, args.workers,
                           "reading noise")
    bad = [f for f, c in zip(speech_files, found) if c is None] + [f for f, n in zip(noise_files, lengths) if n[0] < 0]
    if bad:
        print(f"warning: skipped {len(bad)} unreadable files: {', '.join(str(f) for f in bad[:5])}"
              f"{' ...' if len(bad) > 5 else ''}")
    found = {f: c for f, c in zip(speech_files, found) if c is not None}
    lengths = {f: n for f, n in zip(noise_files, lengths) if n[0] > 0}
    copies = drop_copies({f: c[2] for f, c in found.items()}, "speech")
    speech_hashes = {c[2] for f, c in found.items() if f not in copies}
    noise_copies = drop_copies({f: n[1] for f, n in lengths.items()}, "noise")
    in_speech = [f for f, n in lengths.items() if n[1] in speech_hashes]
    if in_speech:
        print(f"noise: {len(in_speech)} recordings hold the audio of a speech recording: left out of the noise")
    chunks = {f: c[0] for f, c in found.items() if f not in copies}
    seconds = {f: found[f][1] for f in chunks}
    noise_len = {f: n[0] for f, n in lengths.items() if f not in noise_copies and f not in in_speech}
    print(f"{sum(map(len, chunks.values()))} speech chunks of {args.clip_seconds:g} s kept "
          f"({sum(1 for c in chunks.values() if not c)} recordings too short or silent)")
    return chunks, seconds, noise_len


def summarise(speech, noise, chunks, seconds, noise_len, speakers, corpus, args):
    """What each split holds (speakers, recordings, minutes; per corpus too): summary.json, read by train.py."""
    out = {}
    for s in SPLITS:
        used = [f for f in speech[s] if chunks[f]]
        out[s] = dict(n_speakers=len({speakers[f] or f.stem for f in used}), n_speech_files=len(used),
                      speech_minutes=round(sum(seconds[f] for f in used) / 60, 2),
                      n_noise_files=len(noise[s]),
                      noise_minutes=round(sum(noise_len[f] for f in noise[s]) / args.sample_rate / 60, 2),
                      corpora={c: dict(n_speakers=len({speakers[f] or f.stem for f in used if corpus[f] == c}),
                                       n_speech_files=sum(corpus[f] == c for f in used),
                                       speech_minutes=round(sum(seconds[f] for f in used if corpus[f] == c) / 60, 2))
                               for c in sorted({corpus[f] for f in used})})
    return out


def settings_of(args, cfg, demo, speech_roots, noise_roots, n_speech_files, n_noise_files):
    """The settings that decide the set (config.json): a re-run with the same ones completes it."""
    settings = dict(audio=cfg.to_dict(), demo=demo, speech_dir=[str(d) for d in speech_roots],
                    noise_dir=[str(d) for d in noise_roots],
                    n_speech_files=n_speech_files, n_noise_files=n_noise_files,
                    **{k: v for k, v in vars(args).items() if k not in ("speech_dir", "noise_dir", "out", "workers",
                                                                        "overwrite", "demo", "download_esc50")})
    return json.loads(json.dumps(settings, default=str))  # tuples -> lists, paths -> str, as they read back


def label_speakers(chunks, speech_roots, speech_root_of, args):
    """{file: speaker or None} over the kept speech recordings, folder by folder."""
    return {f: spk for root in speech_roots
            for f, spk in speakers_of([f for f in chunks if speech_root_of[f] == root], root, args).items()}


def label_noise(noise_len, noise_roots, noise_root_of, args):
    """{file: category} and {file: ESC-50 fold or None} over the kept noise recordings, folder by folder."""
    cats, folds = {}, {}
    for root in noise_roots:
        c, fo = noise_labels([f for f in noise_len if noise_root_of[f] == root], root, args)
        cats.update(c)
        folds.update(fo)
    return cats, folds


def wanted(split, args):
    """Whether a split should hold anything: train always, val and test unless their fraction is 0."""
    return split == "train" or getattr(args, f"{split}_fraction") > 0


def require_noise_per_split(noise, cats, args):
    """Stop when a wanted split has no noise recordings of its own."""
    for s in SPLITS:
        if wanted(s, args) and not noise[s]:
            raise UserError(f"too few noise recordings ({len(cats)}) to give the {s} split its own")


def require_speech_per_split(jobs, args):
    """Stop when a wanted split got no mixtures."""
    for s in SPLITS:
        if not any(j["split"] == s for j in jobs) and wanted(s, args):
            raise UserError(f"the {s} split got no speech: give more speakers/recordings or change the fractions")


def write_mixtures(jobs, settings, args, cfg):
    """config.json first (so a re-run knows what it is completing), then every mixture; returns the noise starts."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(settings, indent=2))
    for s in SPLITS:
        for kind in KINDS:
            (out / s / kind).mkdir(parents=True, exist_ok=True)
    return run_parallel(functools.partial(make_item, out=out, args=args, cfg=cfg), jobs, args.workers, "mixing")


def report(jobs, seconds, demo, took, args):
    """Print what was written and how fast."""
    counts = ", ".join(f"{s} {sum(j['split'] == s for j in jobs)}" for s in SPLITS)
    clip_s = round(args.clip_seconds * args.sample_rate) / args.sample_rate
    print(f"wrote {len(jobs)} mixtures to {args.out}{' (with DEMO corpus audio)' if demo else ''}: {counts}")
    print(f"read {sum(seconds.values()) / 60:.1f} min of speech and wrote {len(jobs) * clip_s / 60:.1f} min of "
          f"mixtures in {took:.0f} s ({sum(seconds.values()) / took:.0f}x real time) with {args.workers} workers")


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    cfg = AudioConfig(sample_rate=args.sample_rate)
    if args.download_esc50:
        download_esc50(args.download_esc50, args.esc50_url, args.esc50_sha256)
    speech_roots, noise_roots, demo = resolve_corpora(args)
    speech_root_of, noise_root_of = gather(speech_roots, "speech"), gather(noise_roots, "noise")
    settings = settings_of(args, cfg, demo, speech_roots, noise_roots, len(speech_root_of), len(noise_root_of))
    check_existing(args.out, settings, args.overwrite)
    chunks, seconds, noise_len = read_recordings(list(speech_root_of), list(noise_root_of), args)

    # split by speaker or recording (per corpus) and by noise recording (or ESC-50 fold), then plan every mixture
    speakers = label_speakers(chunks, speech_roots, speech_root_of, args)
    corpus = corpora_of(list(chunks), speech_root_of, speakers, args)
    cats, folds = select_categories(*label_noise(noise_len, noise_roots, noise_root_of, args), args)
    speech = split_speech(speakers, corpus, args)
    noise = split_noise(cats, folds, args, noise_root_of)
    require_noise_per_split(noise, cats, args)
    jobs = plan(speech, noise, chunks, noise_len, speakers, corpus, cats, speech_root_of, noise_root_of, args)
    require_speech_per_split(jobs, args)

    starts = write_mixtures(jobs, settings, args, cfg)
    summary = summarise(speech, noise, chunks, seconds, noise_len, speakers, corpus, args)
    atomic_save(args.out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    write_manifest(args.out, jobs, starts, args)
    report(jobs, seconds, demo, time.time() - t0, args)


def write_manifest(out, jobs, starts, args):
    """manifest.csv, written last and atomically: its presence marks a complete set."""
    rows = []
    clip_s = round(args.clip_seconds * args.sample_rate) / args.sample_rate
    for j, noise_start in zip(jobs, starts):
        rows.append(dict(id=j["id"], split=j["split"], corpus=j["corpus"], speech_source=j["speech_source"],
                         speaker=j["speaker"], speech_start_s=round(j["speech_start"] / args.sample_rate, 4),
                         noise_source=j["noise_source"], noise_category=j["noise_category"],
                         noise_start_s=round(noise_start / args.sample_rate, 4),
                         snr_db=j["snr_db"], level_db=j["level_db"], seconds=clip_s))
    tmp = out / "manifest.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "manifest.csv")


if __name__ == "__main__":
    run_main(main)
