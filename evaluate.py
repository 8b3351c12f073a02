"""
Score the model beside the noisy input and a classical Wiener filter, on paired clean/noisy audio.

    python evaluate.py --split test                          # data/processed/test of a prepared set
    python evaluate.py --model models/unet.pt --noisy DIR --clean DIR [--manifest CSV] [--out results.json]
    python evaluate.py --noisy ../shared/data/real/devtest/noisy --clean ../shared/data/real/devtest/clean
    python evaluate.py --noisy my_recordings/                # real recordings, no references: DNSMOS only

Files pair up by name (noisy/000.wav with clean/000.wav, any extension); files without a
partner are reported, never silently dropped. A manifest (DIR/../manifest.csv is picked
up by itself) gives each file's input SNR (`snr_db`) and `noise_category`, matched by
id = file stem. Metrics are those of ../shared/bench (eval_peers), so numbers compare:
- everything is scored at 16 kHz mono (files are downmixed and resampled with soxr);
  a pair that differs in length is cut to the shorter and counted as a warning;
- PESQ-WB = pesq(SR, clean, x, 'wb'); NaN (null in the JSON, left out, counted) when it fails;
  STOI = pystoi.stoi(clean, x, SR, extended=False); SI-SDR in dB after removing
  the mean (audio.si_sdr); SI-SDRi = SI-SDR(x) - SI-SDR(noisy), per file;
- each summary is mean +- 95% CI half-width, t(0.975, n-1) * sd / sqrt(n), over files,
  also per input SNR (continuous SNRs are binned to the nearest 5 dB) and per noise category;
- DNSMOS P.835 (SIG, BAK, OVRL; the speechmos package and its bundled ONNX models, as the
  benchmark harness) needs no reference: without --clean it is the score, with --clean it
  joins the others when --dnsmos is given. Each output is clipped to [-1, 1] for it;
- RTF = processing seconds / audio seconds, model loading excluded. The model runs in this
  process (with the stated torch threads); the metrics then run in a process pool.
Outputs: markdown tables on stdout, every number (per-file values too) in --out, a bar chart in --plot,
and a listening report (report.py) beside them: the tables, the chart and, worst files first, audio
players with spectrograms for the input, the output and the reference.
"""
import csv
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pesq import pesq
from pystoi import stoi
from scipy.ndimage import minimum_filter1d
from scipy.signal import lfilter
from scipy.stats import t as student_t
from tqdm import tqdm

from audio import arg_parser, AudioConfig, UserError, atomic_save, find_audio, istft, load_audio, run_main, si_sdr, stft, write_audio
from dataset import read_manifest
from checkpoint import DEFAULT_MODEL, load_checkpoint, model_from_checkpoint, save_checkpoint
from denoise import denoise_array

SR = AudioConfig.sample_rate  # PESQ-WB, DNSMOS and the shared benchmark score at 16 kHz
SYSTEMS = ("noisy", "wiener", "unet")
PAIRED_METRICS = (("pesq_wb", "PESQ-WB", "{:.3f}"), ("stoi", "STOI", "{:.3f}"), ("si_sdr", "SI-SDR (dB)", "{:.2f}"),
                  ("si_sdr_i", "SI-SDRi (dB)", "{:.2f}"))
DNSMOS_METRICS = (("dnsmos_sig", "DNSMOS SIG", "{:.2f}"), ("dnsmos_bak", "DNSMOS BAK", "{:.2f}"),
                  ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"))


def metric_list(paired, dnsmos):
    return (PAIRED_METRICS if paired else ()) + (DNSMOS_METRICS if dnsmos else ())


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint (default: the pretrained model)")
    p.add_argument("--noisy", type=Path, help="folder of noisy files; alone, real recordings scored by DNSMOS")
    p.add_argument("--clean", type=Path, help="folder of the clean references, same file names")
    p.add_argument("--dnsmos", action="store_true", help="also score DNSMOS P.835 with --clean or a split "
                   "(always on without references; about 0.5 s per file and system on 2 cores)")
    p.add_argument("--report", type=Path, help="folder of the HTML listening report (default: --out's name "
                   "without .json, plus _report)")
    p.add_argument("--report-files", type=int, default=24, help="files with players in the report, worst first "
                   "(0: no report)")
    p.add_argument("--manifest", type=Path, help="CSV with id, snr_db, noise_category (default: manifest.csv "
                   "beside the --noisy folder, if there is one)")
    p.add_argument("--split", help="split of the prepared set scored when --noisy is not given (default: test; "
                   "val with --tune-floor)")
    p.add_argument("--data-dir", type=Path, default=Path("data/processed"), help="the prepared set")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="JSON with every number")
    p.add_argument("--plot", type=Path, help="bar chart PNG (default: --out with .png)")
    p.add_argument("--save-dir", type=Path, help="also write the 16 kHz outputs to DIR/<system>/<id>.wav")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes computing the metrics")
    p.add_argument("--threads", type=int, help="torch threads for the model (default: torch's own choice)")
    p.add_argument("--chunk-seconds", type=float, default=10.0, help="audio the model processes at once")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    p.add_argument("--tune-floor", type=float, nargs="+", metavar="DB",
                   help="instead of a report: score these floors (the most attenuation a bin gets, e.g. -30 -40 -50 "
                        "-60 dB) by mean PESQ-WB on the validation split and write a copy of --model with the best "
                        "to --out (a .pt; default: the model's name + _tuned.pt); the model read is never changed")
    args = p.parse_args(argv)
    if args.clean is not None and args.noisy is None:
        p.error("--clean needs --noisy")
    if args.report_files < 0:
        p.error("--report-files must be 0 or more")
    if args.workers < 1 or args.chunk_seconds <= 0 or (args.threads is not None and args.threads < 1):
        p.error("--workers, --threads and --chunk-seconds must be positive")
    args.split = args.split or ("val" if args.tune_floor else "test")
    if args.tune_floor:
        args.out = args.out if args.out.suffix == ".pt" else args.model.with_name(args.model.stem + "_tuned.pt")
    args.plot = args.plot or args.out.with_suffix(".png")
    args.report = args.report or args.out.with_name(args.out.stem + "_report")
    args.dnsmos = args.dnsmos or (args.noisy is not None and args.clean is None)
    return args


# ----------------------------------------------------------------------------- the classical baseline
def wiener(x, cfg=AudioConfig(), smooth=0.85, window_s=1.5, bias=2.0, dd=0.98, floor_db=-15.0):
    """STFT Wiener filter with a minimum-statistics noise estimate: the classical baseline.

    - Noise PSD (after Martin 2001, simplified): the periodogram |Y|^2 is smoothed over time
      (one-pole, `smooth`), and in each bin its minimum over a centred window of `window_s`
      seconds follows the noise floor, since speech leaves a pause in every bin within that
      time. A minimum of a noisy estimate lies below its mean, hence the `bias` factor.
    - A-priori SNR by the decision-directed rule (Ephraim & Malah 1984), xi = dd * |S(t-1)|^2 / N
      + (1 - dd) * max(|Y|^2 / N - 1, 0): the memory of the last frame's estimate is what keeps
      musical noise down.
    - Gain xi / (1 + xi), never below `floor_db`, so residual noise stays smooth, not chirping.
    Offline, zero delay, on the model's own STFT (audio.stft / istft), numpy per frame.
    """
    spec = stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), cfg).numpy()
    power = np.abs(spec).astype(np.float64) ** 2
    smoothed, _ = lfilter([1 - smooth], [1, -smooth], power, axis=1, zi=smooth * power[:, :1])
    frames = max(1, round(window_s * cfg.sample_rate / cfg.hop_length))
    noise = bias * minimum_filter1d(smoothed, frames, axis=1, mode="nearest") + 1e-12
    floor = 10 ** (floor_db / 20)
    gain, prev = np.empty_like(power), np.zeros(len(power))
    for i in range(power.shape[1]):
        xi = dd * prev / noise[:, i] + (1 - dd) * np.maximum(power[:, i] / noise[:, i] - 1, 0)
        gain[:, i] = np.maximum(xi / (1 + xi), floor)
        prev = gain[:, i] ** 2 * power[:, i]
    return istft(torch.from_numpy((gain * spec).astype(np.complex64)), cfg, len(x)).numpy()


# ----------------------------------------------------------------------------- metrics (in the pool)
def metrics(est, clean, noisy_si_sdr=None):
    try:
        p = float(pesq(SR, clean, est, "wb"))
    except Exception:  # e.g. "no utterances detected": NaN, counted as a failure
        p = None
    s = float(si_sdr(torch.from_numpy(est), torch.from_numpy(clean)))
    return dict(pesq_wb=p, stoi=float(stoi(clean, est, SR, extended=False)), si_sdr=s,
                si_sdr_i=0.0 if noisy_si_sdr is None else s - noisy_si_sdr)


def dnsmos_scores(x):
    """DNSMOS P.835 of one output (no reference): SIG, BAK, OVRL, as the benchmark harness computes them."""
    from speechmos import dnsmos
    r = dnsmos.run(np.clip(x, -1, 1).astype(np.float32), SR)
    return dict(dnsmos_sig=float(r["sig_mos"]), dnsmos_bak=float(r["bak_mos"]), dnsmos_ovrl=float(r["ovrl_mos"]))


def score(job):
    """One file: the Wiener output, then every system's metrics (against the clean reference, where there is one)."""
    clean = load_audio(job["clean"], SR, mono=True)[0][0] if job["clean"] else None
    noisy, model_out = job["noisy"], job["model"]
    n = len(noisy) if clean is None else min(len(clean), len(noisy))
    noisy, model_out = noisy[:n], model_out[:n]
    t0 = time.perf_counter()
    outputs = dict(noisy=noisy, wiener=wiener(noisy), unet=model_out)
    wiener_s = time.perf_counter() - t0
    if job["save_dir"]:
        write_audio(job["save_dir"] / "wiener" / f"{job['key']}.wav", outputs["wiener"], SR)
    result = dict(id=job["key"], seconds=n / SR, length_mismatch=clean is not None and len(clean) != len(job["noisy"]),
                  unet_s=job["unet_s"], wiener_s=wiener_s)
    for name in SYSTEMS:
        result[name] = {}
        if clean is not None:
            result[name] = metrics(outputs[name], clean[:n], None if name == "noisy" else result["noisy"]["si_sdr"])
        if job["dnsmos"]:
            result[name].update(dnsmos_scores(outputs[name]))
    return result


def _init_worker():
    torch.set_num_threads(1)  # the pool already uses every core


def run_pool(jobs, workers):
    if workers == 1:
        return [score(j) for j in tqdm(jobs, desc="scoring")]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(score, jobs), total=len(jobs), desc="scoring"))


# ----------------------------------------------------------------------------- inputs
def resolve_inputs(args):
    """-> noisy folder, clean folder, manifest rows by id (empty without a manifest), manifest path."""
    if args.noisy is None:
        root = args.data_dir
        noisy, clean = root / args.split / "noisy_voice", root / args.split / "voice"
        rows, manifest = read_manifest(root, args.split), root / "manifest.csv"
        if not rows:
            raise UserError(f"the {args.split} split of {root} has no rows in manifest.csv")
    else:
        noisy, clean, manifest = args.noisy, args.clean, args.manifest
        if manifest is None and (args.noisy.parent / "manifest.csv").is_file():
            manifest = args.noisy.parent / "manifest.csv"
        rows = []
        if manifest is not None:
            if not manifest.is_file():
                raise UserError(f"no such manifest: {manifest}")
            with open(manifest, newline="") as fh:
                reader = csv.DictReader(fh)
                if "id" not in (reader.fieldnames or []):
                    raise UserError(f"{manifest} has no id column")
                rows = list(reader)
    for folder in (noisy, clean):
        if folder is not None and not folder.is_dir():
            raise UserError(f"no such folder: {folder}")
    return noisy, clean, {r["id"].strip(): r for r in rows}, manifest


def pair_files(noisy_dir, clean_dir):
    """Pair files by path without extension: -> [(key, noisy, clean)], noisy-only keys, clean-only keys.
    Without a clean folder every noisy file stands alone: [(key, noisy, None)]."""
    found = []
    for folder in (noisy_dir, clean_dir or noisy_dir):
        files = find_audio(folder)
        if not files:
            raise UserError(f"no audio files in {folder}")
        found.append({p.relative_to(folder).with_suffix("").as_posix(): p for p in files})
    noisy, clean = found
    if clean_dir is None:
        return [(k, noisy[k], None) for k in sorted(noisy)], [], []
    pairs = [(k, noisy[k], clean[k]) for k in sorted(noisy.keys() & clean.keys())]
    if not pairs:
        raise UserError(f"no file in {noisy_dir} has a partner of the same name in {clean_dir}")
    return pairs, sorted(noisy.keys() - clean.keys()), sorted(clean.keys() - noisy.keys())


def snr_labels(snrs):
    """Input SNRs -> group labels. A few whole-dB values are kept; anything else is binned to 5 dB."""
    known = [s for s in snrs if s is not None]
    binned = len(set(known)) > 12 or any(s != round(s) for s in known)
    labels = [None if s is None else 5 * int(np.floor(s / 5 + 0.5)) if binned else round(s) for s in snrs]
    return [("n/a" if s is None else f"{s:g} dB") for s in labels], ("nearest 5 dB" if binned else "as given")


def warn(names, what):
    if names:
        print(f"warning: {len(names)} {what}: {', '.join(names[:5])}" + (" ..." if len(names) > 5 else ""),
              file=sys.stderr)


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- statistics and report
def mean_ci(values):
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return dict(mean=None, ci95=None, n=0)
    ci = float(student_t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return dict(mean=float(v.mean()), ci95=ci, n=len(v))


def summarise(files, metrics_, key=None):
    """{group: {system: {metric: mean_ci}}} over files grouped by file[key] (one group without a key)."""
    groups = {}
    for f in files:
        groups.setdefault(f[key] if key else "all", []).append(f)
    return {g: {s: {m: mean_ci([f[s][m] for f in fs]) for m, _, _ in metrics_} for s in SYSTEMS}
            for g, fs in groups.items()}


def cell(stat, fmt):
    if stat["mean"] is None:
        return "n/a"
    return fmt.format(stat["mean"]) + ("" if stat["ci95"] is None else " ± " + fmt.format(stat["ci95"]))


def snr_order(label):
    return float("inf") if label == "n/a" else float(label.split()[0])


def headline(metrics_):
    """The metric shown by SNR and category and in the last panel of the chart: SI-SDRi, or DNSMOS OVRL."""
    return next(m for m in metrics_ if m[0] in ("si_sdr_i", "dnsmos_ovrl"))


def report(summary, by_snr, by_cat, binning, pesq_failures, metrics_):
    n_of = lambda stats: stats[metrics_[0][0]]["n"]
    lines = ["| system | " + " | ".join(title for _, title, _ in metrics_) + " | n |",
             "|---" * (len(metrics_) + 2) + "|"]
    for s in SYSTEMS:
        stats = summary["all"][s]
        lines.append(f"| {s} | " + " | ".join(cell(stats[m], fmt) for m, _, fmt in metrics_) + f" | {n_of(stats)} |")
    lines.append("\nMean ± 95% CI (Student t over files)." + (" PESQ failures (left out): " + ", ".join(
        f"{s} {pesq_failures[s]}" for s in SYSTEMS) if "pesq_wb" in dict((m[0], m) for m in metrics_) else ""))
    snrs = sorted(by_snr, key=snr_order)
    if snrs == ["n/a"] and list(by_cat) == ["n/a"]:
        return "\n".join(lines + ["(no manifest with snr_db / noise_category: no breakdowns)"])
    shown = [m for m in metrics_ if m[0] in ("pesq_wb", "stoi", "si_sdr_i", "dnsmos_ovrl")]
    for m, title, fmt in shown:
        lines += [f"\n### {title} by input SNR ({binning})\n",
                  "| system | " + " | ".join(f"{g} (n={n_of(by_snr[g]['noisy'])})" for g in snrs) + " |",
                  "|---" * (len(snrs) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(cell(by_snr[g][s][m], fmt) for g in snrs) + " |" for s in SYSTEMS]
    m, title, fmt = headline(metrics_)
    lines += [f"\n### {title} by noise category\n", "| category | " + " | ".join(SYSTEMS) + " | n |",
              "|---" * (len(SYSTEMS) + 2) + "|"]
    lines += [f"| {c} | " + " | ".join(cell(by_cat[c][s][m], fmt) for s in SYSTEMS) +
              f" | {n_of(by_cat[c]['noisy'])} |" for c in sorted(by_cat)]
    return "\n".join(lines)


def plot(summary, by_snr, binning, path, metrics_):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), gridspec_kw=dict(width_ratios=[1, 1, 1, 2]))
    colours = [f"C{i}" for i in range(len(SYSTEMS))]
    err = lambda st: 0 if st["ci95"] is None else st["ci95"]
    for ax, (m, title, _) in zip(axes, metrics_[:3]):
        stats = [summary["all"][s][m] for s in SYSTEMS]
        ax.bar(SYSTEMS, [st["mean"] or 0 for st in stats], yerr=[err(st) for st in stats], color=colours, capsize=4)
        ax.set_title(title)
    m, title, _ = headline(metrics_)
    snrs = sorted(by_snr, key=snr_order)
    shown = SYSTEMS[1:] if m == "si_sdr_i" else SYSTEMS  # the noisy input's SI-SDRi is 0 by definition
    width = 0.8 / len(shown)
    for i, s in enumerate(shown):
        stats = [by_snr[g][s][m] for g in snrs]
        axes[3].bar(np.arange(len(snrs)) + (i - (len(shown) - 1) / 2) * width, [st["mean"] or 0 for st in stats],
                    width, yerr=[err(st) for st in stats], color=colours[SYSTEMS.index(s)], capsize=3, label=s)
    axes[3].set(xticks=range(len(snrs)), xticklabels=snrs, title=f"{title} by input SNR ({binning})")
    axes[3].axhline(0, color="k", lw=0.5)
    axes[3].legend()
    fig.suptitle("mean ± 95% CI over files")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def run_model(model, pairs, args):
    """The model over every file, alone in this process so that its timing is not disturbed by the pool."""
    jobs = []
    for i, (key, noisy_path, clean_path) in enumerate(tqdm(pairs, desc="denoising")):
        noisy = load_audio(noisy_path, SR, mono=True)[0]
        if noisy.shape[1] == 0:
            raise UserError(f"{noisy_path} holds no audio samples")
        if i == 0:  # a warm-up run, so one-off allocations are not billed to the first file
            denoise_array(model, noisy[:, :SR], SR, args.chunk_seconds, args.device)
        t0 = time.perf_counter()
        out = denoise_array(model, noisy, SR, args.chunk_seconds, args.device)[0]
        jobs.append(dict(key=key, clean=clean_path, noisy=noisy[0], model=out, unet_s=time.perf_counter() - t0,
                         save_dir=args.save_dir, dnsmos=args.dnsmos))
        if args.save_dir:
            write_audio(args.save_dir / "unet" / f"{key}.wav", out, SR)
    return jobs


def add_groups(files, rows, manifest):
    """Each file's input SNR group and noise category from the manifest."""
    for f in files:
        row = rows.get(Path(f["id"]).name)
        f.update(in_manifest=row is not None, snr_db=number((row or {}).get("snr_db")),
                 category=(row or {}).get("noise_category") or "n/a")
    labels, binning = snr_labels([f["snr_db"] for f in files])
    for f, label in zip(files, labels):
        f["snr_group"] = label
    warn([f["id"] for f in files if f["length_mismatch"]], "pairs differ in length (both cut to the shorter)")
    warn([f["id"] for f in files if rows and not f["in_manifest"]], f"files without a row in {manifest} (grouped as n/a)")
    return binning


def listening_report(args, jobs, files, metrics_, tables):
    """The HTML page: tables, chart, and the worst files (by the model's headline metric) with players."""
    from report import write_report
    m, title, fmt = headline(metrics_)
    order = sorted(range(len(files)), key=lambda i: np.inf if files[i]["unet"].get(m) is None else files[i]["unet"][m])
    items = []
    for i in order[:args.report_files]:
        job, f = jobs[i], files[i]
        n = round(f["seconds"] * SR)
        clean = load_audio(job["clean"], SR, mono=True)[0][0][:n] if job["clean"] else None
        scores = "; ".join(f"{s}: " + ", ".join(f"{t} {fmt_.format(f[s][k])}" for k, t, fmt_ in metrics_
                                                 if f[s].get(k) is not None) for s in ("noisy", "unet"))
        items.append(dict(id=f["id"], scores=scores, input=job["noisy"][:n], output=job["model"][:n], clean=clean))
    return write_report(args.report, f"Denoising report: {args.model.name} on {len(files)} files", tables, items,
                        args.plot, SR)


def main(argv=None):
    args = parse_args(argv)
    noisy_dir, clean_dir, rows, manifest = resolve_inputs(args)
    pairs, noisy_only, clean_only = pair_files(noisy_dir, clean_dir)
    warn(noisy_only, f"noisy files without a clean file in {clean_dir} (left out)")
    warn(clean_only, f"clean files without a noisy file in {noisy_dir} (left out)")
    no_file = sorted(set(rows) - {Path(key).name for key, _, _ in pairs})
    warn(no_file, f"rows of {manifest} without a file pair")
    if args.tune_floor:
        if clean_dir is None:
            raise UserError("--tune-floor scores PESQ-WB: it needs --clean references (or a prepared split)")
        return tune_floor(args, pairs)
    for path in (args.out, args.plot, args.report):
        if not path.parent.is_dir():
            raise UserError(f"output folder does not exist: {path.parent}")
    ckpt = load_checkpoint(args.model)
    model = model_from_checkpoint(ckpt, args.model, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    for s in ("unet", "wiener") if args.save_dir else ():
        for key, _, _ in pairs:
            (args.save_dir / s / key).parent.mkdir(parents=True, exist_ok=True)
    jobs = run_model(model, pairs, args)
    files = run_pool(jobs, args.workers)  # the metrics (and the Wiener filter) in a pool
    binning = add_groups(files, rows, manifest)
    metrics_ = metric_list(clean_dir is not None or args.noisy is None, args.dnsmos)

    audio_s = sum(f["seconds"] for f in files)
    threads = dict(unet=torch.get_num_threads(), wiener=1 if args.workers > 1 else torch.get_num_threads())
    speed = {s: dict(rtf=sum(f[f"{s}_s"] for f in files) / audio_s, seconds=sum(f[f"{s}_s"] for f in files),
                     threads=threads[s]) for s in threads}
    summary = summarise(files, metrics_)
    by_snr, by_cat = summarise(files, metrics_, "snr_group"), summarise(files, metrics_, "category")
    pesq_failures = {s: sum(f[s].get("pesq_wb", 0) is None for f in files) for s in SYSTEMS}
    tables = report(summary, by_snr, by_cat, binning, pesq_failures, metrics_)
    print(tables)
    print(f"\nRTF (processing s / audio s, {audio_s:.1f} s of audio): unet {speed['unet']['rtf']:.4f} on "
          f"{args.device} with {speed['unet']['threads']} torch threads; wiener {speed['wiener']['rtf']:.4f} "
          f"with {speed['wiener']['threads']} thread(s)")

    results = dict(
        settings=dict(noisy=str(noisy_dir), clean=clean_dir and str(clean_dir), manifest=manifest and str(manifest),
                      split=args.split if args.noisy is None else None, sample_rate=SR, workers=args.workers,
                      chunk_seconds=args.chunk_seconds, device=args.device, snr_binning=binning,
                      metrics=[m for m, _, _ in metrics_]),
        model=dict(path=str(args.model), code_version=ckpt.get("code_version"), model_args=ckpt["model_args"],
                   audio=ckpt["audio"], epoch=ckpt.get("epoch")),
        n_files=len(files), audio_seconds=audio_s, speed=speed,
        warnings=dict(noisy_without_clean=noisy_only, clean_without_noisy=clean_only, manifest_rows_without_files=no_file,
                      length_mismatch=[f["id"] for f in files if f["length_mismatch"]],
                      files_without_manifest_row=[f["id"] for f in files if rows and not f["in_manifest"]]),
        systems={s: dict(summary=summary["all"][s], pesq_failures=pesq_failures[s],
                         by_snr={g: by_snr[g][s] for g in sorted(by_snr, key=snr_order)},
                         by_category={c: by_cat[c][s] for c in sorted(by_cat)}) for s in SYSTEMS},
        per_file=files)
    atomic_save(args.out, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1)))
    plot(summary, by_snr, binning, args.plot, metrics_)
    page = listening_report(args, jobs, files, metrics_, tables) if args.report_files else None
    print(f"wrote {args.out}, {args.plot}" + (f" and the listening report {page}" if page else ""))
    return results


def tune_floor(args, pairs):
    """Pick the subtraction floor by mean PESQ-WB on these files; write a copy of the checkpoint with it to args.out."""
    if args.out.resolve() == args.model.resolve() or args.out.exists():
        raise UserError(f"--out {args.out} exists or is the model read; choose a new file for the tuned checkpoint")
    if not args.out.parent.is_dir():
        raise UserError(f"output folder does not exist: {args.out.parent}")
    ckpt = load_checkpoint(args.model)
    model = model_from_checkpoint(ckpt, args.model, args.device)
    with multiprocessing.get_context("fork").Pool(args.workers, initializer=_init_worker) as pool:
        data = [(load_audio(n, SR, mono=True)[0], load_audio(c, SR, mono=True)[0][0]) for _, n, c in pairs]
        if args.threads:
            torch.set_num_threads(args.threads)
        table = {}
        for db in args.tune_floor:
            model.config.floor_db = db
            outs = [denoise_array(model, x, SR, args.chunk_seconds, args.device)[0][: len(c)]
                    for x, c in tqdm(data, desc=f"floor {db:g} dB")]
            scores = pool.starmap(metrics, [(o, c[: len(o)]) for o, (_, c) in zip(outs, data)])
            table[db] = {k: float(np.nanmean([np.nan if r[k] is None else r[k] for r in scores]))
                         for k in ("pesq_wb", "stoi", "si_sdr")}
            print(f"floor {db:g} dB: PESQ-WB {table[db]['pesq_wb']:.3f}, STOI {table[db]['stoi']:.3f}, "
                  f"SI-SDR {table[db]['si_sdr']:.2f} dB ({len(outs)} files)")
    best = max(table, key=lambda db: table[db]["pesq_wb"])
    model.config.floor_db = best  # the same weights and everything else the checkpoint holds, with the new floor
    run = {k: v for k, v in ckpt.items() if k not in ("model", "model_args", "audio")}
    run.setdefault("trained_floor_db", ckpt["model_args"]["floor_db"])
    run["floor_tuning"] = dict(files=len(pairs), split=args.split if args.noisy is None else str(args.noisy),
                               scores={str(k): v for k, v in table.items()})
    save_checkpoint(args.out, model, **run)
    print(f"floor {best:g} dB has the best PESQ-WB: wrote {args.out} ({args.model} is unchanged)")
    return table


if __name__ == "__main__":
    run_main(main)
