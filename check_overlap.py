"""
Check by content that no recording of one set occurs inside another (say, test inside training).

    python check_overlap.py data/my_test/clean data/speech
    python check_overlap.py EVAL_DIR TRAIN_DIR [TRAIN_DIR ...] --threshold 0.9

File names say nothing: corpora hold the same audio under other names, cut, scaled or padded.
For every file a of the first folder and every file b of the others, this finds the highest
normalised cross-correlation between a and any stretch of b (or b and any stretch of a, when
b is the shorter) over all lags, at 8 kHz: 1.0 for a copy, however cut or scaled; unrelated
speech or noise stays far below (about 0.1 to 0.5). Pairs at or above --threshold are listed
and the exit status is 1; otherwise it says so and exits 0. Cost: one FFT correlation per pair.

A whole-file match misses a stretch shared by two longer recordings (a sentence cut from a
broadcast that also holds other sentences). --window-seconds W also matches every stretch of W
seconds of each query file (half-overlapping) against the others, so any shared stretch of
1.5 W or more is found; it costs about 2 x (query seconds / W) times as many correlations.
Short stretches can also match what is not a copy: a window that is quiet but for one vowel
can correlate highly with a vowel of the same voice elsewhere. Listen to what it lists.
"""
import functools
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve
from tqdm import tqdm

from audio import arg_parser, UserError, find_audio, load_audio, run_main

SR = 8000  # enough to tell a copy; four times fewer samples than 16 kHz


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("query", type=Path, help="folder whose files must not occur in the others (e.g. a test set)")
    p.add_argument("others", type=Path, nargs="+", help="folders to search (e.g. the training speech and noise)")
    p.add_argument("--threshold", type=float, default=0.9, help="normalised correlation that counts as the same audio")
    p.add_argument("--min-seconds", type=float, default=0.5, help="ignore stretches shorter than this")
    p.add_argument("--window-seconds", type=float, default=0.0,
                   help="also match each query file's stretches of this length (0: whole files only)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel processes")
    args = p.parse_args(argv)
    if args.window_seconds and args.window_seconds < args.min_seconds:
        p.error(f"--window-seconds {args.window_seconds:g} is below --min-seconds {args.min_seconds:g}")
    for folder in (args.query, *args.others):
        if not folder.is_dir():
            p.error(f"no such folder: {folder}")
    return args


def load(path):
    """Mono at 8 kHz, zero-mean, silence at the ends dropped."""
    x = load_audio(path, SR, mono=True)[0][0].astype(np.float64)
    loud = np.flatnonzero(np.abs(x) > 1e-4)
    x = x[loud[0]:loud[-1] + 1] if loud.size else x[:0]
    return x - x.mean() if x.size else x


def best_match(short, long_, min_len):
    """Highest normalised cross-correlation of short against every stretch of long_ of its length."""
    n = len(short)
    if n < min_len or len(long_) < n or not np.any(short):
        return 0.0
    num = fftconvolve(long_, short[::-1], mode="valid")  # sum(short * long_[k:k+n]) for every lag k
    energy = np.concatenate([[0.0], np.cumsum(long_ ** 2)])
    window = np.sqrt(np.maximum(energy[n:] - energy[:-n], 0)) * np.linalg.norm(short)
    ok = window > 1e-9 * max(window.max(), 1e-30)
    return float(np.max(np.abs(num[ok]) / window[ok])) if ok.any() else 0.0


def stretches(x, n):
    """Half-overlapping stretches of n samples of x (none when n is 0 or x is under two of them),
    the near-silent ones left out: silence matches silence anywhere."""
    if n <= 0 or len(x) < 2 * n:
        return []
    loud = 0.01 * np.sqrt(np.mean(x ** 2))
    return [x[i:i + n] for i in range(0, len(x) - n + 1, n // 2) if np.sqrt(np.mean(x[i:i + n] ** 2)) > loud]


def scan(query_path, others, min_len, window_len=0):
    """(query file, best other file, correlation) for one query file: the whole file, and each of
    its stretches of window_len samples, against each other file."""
    a = load(query_path)
    parts = stretches(a, window_len)
    best = (None, 0.0)
    for path, b in others:
        c = best_match(a, b, min_len) if len(a) <= len(b) else best_match(b, a, min_len)
        c = max([c] + [best_match(w, b, min_len) for w in parts if len(w) <= len(b)])
        if c > best[1]:
            best = (path, c)
    return query_path, *best


def main(argv=None):
    args = parse_args(argv)
    query = find_audio(args.query)
    others = [f for folder in args.others for f in find_audio(folder)]
    if not query or not others:
        raise UserError(f"no audio files in {args.query if not query else ' '.join(map(str, args.others))}")
    loaded = [(f, load(f)) for f in tqdm(others, desc="reading")]
    work = functools.partial(scan, others=loaded, min_len=round(args.min_seconds * SR),
                             window_len=round(args.window_seconds * SR))
    if args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            found = list(tqdm(pool.imap(work, query), total=len(query), desc="searching"))
    else:
        found = [work(q) for q in tqdm(query, desc="searching")]
    hits = [(q, o, c) for q, o, c in found if c >= args.threshold]
    top = max(found, key=lambda r: r[2])
    print(f"{len(query)} files of {args.query} against {len(others)} files: highest correlation {top[2]:.3f} "
          f"({top[0].name} in {top[1]})" if top[1] else f"{len(query)} files: nothing to compare")
    for q, o, c in sorted(hits, key=lambda r: -r[2]):
        print(f"  {c:.3f}  {q}  in  {o}")
    shared = f" or share a stretch of {args.window_seconds:g} s with them" if args.window_seconds else ""
    print(f"{len(hits)} of {len(query)} files occur in the others{shared} (correlation >= {args.threshold})")
    if hits:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
