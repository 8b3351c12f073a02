"""
Pack a speech and noise corpus small enough to carry where a size limit bites (a rented GPU's upload).

    python pack_corpus.py ../shared/data/real --include speech noise esc10 --out runs/pack
    python pack_corpus.py my_corpus --out pack --format flac        # lossless (larger)

Every audio file under the included folders is mixed to mono, resampled to the model's rate
(AudioConfig) and written at the same relative path, as .ogg (Vorbis, --quality) or .flac
(PCM_16). CSV files (speech labels, ESC-50's meta/esc50.csv) are copied with the audio file
names in them renamed the same way, so prepare_data.py reads the pack as it reads the source:

    python prepare_data.py --speech-dir runs/pack/speech --noise-dir runs/pack/noise runs/pack/esc10 \\
        --speech-labels runs/pack/speech_labels.csv --out data/packed

A lossy pack is tested as it is written: the SNR of each decoded file against the resampled
source is measured, and the size and the SNR's spread are printed at the end.
"""
import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audio import AUDIO_EXTENSIONS, AudioConfig, UserError, arg_parser, find_audio, load_audio, run_main

FORMATS = {"vorbis": (".ogg", "OGG", "VORBIS"), "flac": (".flac", "FLAC", "PCM_16")}


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("root", type=Path, help="folder holding the corpus (its CSV files are copied too)")
    p.add_argument("--include", nargs="+", help="subfolders of root to pack (default: all of it)")
    p.add_argument("--out", type=Path, required=True, help="where the pack goes (must not exist)")
    p.add_argument("--format", choices=FORMATS, default="vorbis", help="vorbis (lossy, small) or flac (lossless)")
    p.add_argument("--quality", type=float, default=0.5,
                   help="Vorbis compression level, 0 (best, largest) to 1 (smallest)")
    args = p.parse_args(argv)
    if not 0 <= args.quality <= 1:
        p.error("--quality must be between 0 and 1")
    return args


def renamed(name, suffix):
    """An audio file's name in the pack (other strings unchanged)."""
    path = Path(name)
    return str(path.with_suffix(suffix)) if path.suffix.lower() in AUDIO_EXTENSIONS else name


def copy_csv(src, dst, suffix):
    with open(src, newline="") as fh:
        rows = list(csv.reader(fh))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", newline="") as fh:
        csv.writer(fh).writerows([[renamed(cell, suffix) for cell in row] for row in rows])


def snr_db(ref, test):
    """SNR of a decoded file against its source (the error is everything that differs)."""
    n = min(len(ref), len(test))
    err = np.sum((ref[:n] - test[:n]) ** 2)
    return float(10 * np.log10(np.sum(ref[:n] ** 2) / err)) if err > 0 else float("inf")


def main(argv=None):
    args = parse_args(argv)
    if not args.root.is_dir():
        raise UserError(f"no folder {args.root}")
    if args.out.exists():
        raise UserError(f"{args.out} exists; choose a new --out")
    sr = AudioConfig().sample_rate
    suffix, fmt, subtype = FORMATS[args.format]
    folders = [args.root / f for f in args.include] if args.include else [args.root]
    for f in folders:
        if not f.is_dir():
            raise UserError(f"no folder {f}")
    files = [p for f in folders for p in find_audio(f)]
    if not files:
        raise UserError(f"no audio files under {', '.join(map(str, folders))}")
    tables = [p for p in args.root.glob("*.csv")] + [p for f in folders for p in f.rglob("*.csv")]
    for table in tables:
        copy_csv(table, args.out / table.relative_to(args.root), suffix)
    snrs, seconds = [], 0.0
    for src in tqdm(files, desc="packing", unit="file"):
        audio, _ = load_audio(src, sr, mono=True)
        dst = args.out / renamed(str(src.relative_to(args.root)), suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        extra = {"compression_level": args.quality} if args.format == "vorbis" else {}
        sf.write(dst, np.clip(audio[0], -1, 1), sr, format=fmt, subtype=subtype, **extra)
        decoded, _ = sf.read(dst, dtype="float32")
        snrs.append(snr_db(audio[0], decoded))
        seconds += audio.shape[1] / sr
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    finite = np.array([s for s in snrs if np.isfinite(s)])
    spread = (f"SNR of the decoded pack against the source: median {np.median(finite):.1f} dB, 5th percentile "
              f"{np.percentile(finite, 5):.1f} dB" if len(finite) else "lossless: every file decodes exactly")
    print(f"packed {len(files)} files, {seconds / 60:.1f} min at {sr} Hz, into {args.out}: {size / 2 ** 20:.1f} MiB "
          f"({args.format}); {spread}")


if __name__ == "__main__":
    run_main(main)
