"""
Paired tests between denoisers over the same files: is one really ahead of another?

    python compare.py results.json                           # evaluate.py's JSON: unet against noisy and wiener
    python compare.py bench.json --system ours --against dfn3 ulunas dpcrn   # a benchmark harness JSON
    python compare.py new.json old.json --against old:unet   # two models' evaluate.py runs on the same files

Means and confidence intervals per system overlap long before a difference is real or not; a
paired test looks at the per-file differences. For each metric and each other system this prints
the mean difference (system minus other) with a 95% paired-bootstrap interval, how many files
went each way, and the two-sided Wilcoxon signed-rank p-value. "ahead" is printed only where both
agree: p < --alpha and the whole interval above zero; "behind" where p < --alpha and the interval
below zero; else "on par".
(The Wilcoxon test ranks the differences, so it can reject where a few large losses pull the mean the
other way: files mostly better, mean worse. That is not a difference to claim either way.)
Reads the JSON that `evaluate.py` writes (per_file[i][system][metric]) and the one the team's
benchmark harness writes (systems[name].per_file[i][metric]). With several JSONs, the systems of the
second and later files are named FILE:SYSTEM (FILE is the file's name without .json) and files
are paired by their id.
"""
import json
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from audio import arg_parser, UserError, run_main

METRICS = ("pesq_wb", "stoi", "si_sdr_i", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("results", type=Path, nargs="+", help="JSON from evaluate.py or from the benchmark harness "
                   "(more than one: the later files' systems join as FILE:SYSTEM)")
    p.add_argument("--system", default=None, help="the system to test (default: unet, or ours)")
    p.add_argument("--against", nargs="+", help="systems to compare with (default: all others)")
    p.add_argument("--metrics", nargs="+", default=list(METRICS), help="metrics to test (those present are used)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the Wilcoxon test")
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples for the interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    return p.parse_args(argv)


def per_file_table(results):
    """{system: {file id: {metric: value}}} from either JSON layout."""
    if "systems" in results and all("per_file" in v for v in results["systems"].values()):
        return {name: {r["id"]: r for r in entry["per_file"]} for name, entry in results["systems"].items()}
    if "per_file" in results and results["per_file"] and isinstance(results["per_file"][0], dict):
        systems = [k for k, v in results["per_file"][0].items() if isinstance(v, dict)]
        return {s: {f["id"]: f[s] for f in results["per_file"]} for s in systems}
    raise UserError("no per-file results in this JSON (expected evaluate.py's or the benchmark harness's)")


def paired(a, b, n_boot, rng):
    """Mean of a - b, its 95% paired-bootstrap interval, wins/losses, Wilcoxon p (nan when all equal)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    boots = d[rng.integers(len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    p = wilcoxon(d).pvalue if np.any(d != 0) else float("nan")
    return dict(diff=float(d.mean()), lo=float(lo), hi=float(hi), wins=int((d > 0).sum()), losses=int((d < 0).sum()),
                p=float(p), n=len(d))


def verdict_of(r, alpha):
    """ahead / behind only where the Wilcoxon test and the bootstrap interval of the mean agree."""
    if r["p"] < alpha and r["lo"] > 0:
        return "ahead"
    if r["p"] < alpha and r["hi"] < 0:
        return "behind"
    return "on par"


def read_tables(paths):
    """One {system: {file id: {metric: value}}} over all the JSONs; later files' systems as FILE:SYSTEM."""
    merged = {}
    for i, path in enumerate(paths):
        if not path.is_file():
            raise UserError(f"no such file: {path}")
        try:
            table = per_file_table(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not JSON ({e})") from None
        merged.update({name if i == 0 else f"{path.stem}:{name}": files for name, files in table.items()})
    return merged


def main(argv=None):
    args = parse_args(argv)
    table = read_tables(args.results)
    names = ", ".join(str(p) for p in args.results)
    system = args.system or next((s for s in ("unet", "ours") if s in table), None)
    if system not in table:
        raise UserError(f"no system {system!r} in {names}; it has: {', '.join(table)}")
    others = args.against or [s for s in table if s != system]
    missing = [s for s in others if s not in table]
    if missing:
        raise UserError(f"no system {', '.join(missing)} in {names}; it has: {', '.join(table)}")
    rng = np.random.default_rng(args.seed)
    print(f"{system} against each system, paired over files: mean difference [95% bootstrap CI], "
          f"files better/worse, Wilcoxon signed-rank p\n")
    print("| metric | against | difference | better / worse | p | verdict |\n|---|---|---|---|---|---|")
    rows = 0
    for metric in args.metrics:
        for other in others:
            ids = [i for i in table[system] if i in table[other]
                   and table[system][i].get(metric) is not None and table[other][i].get(metric) is not None
                   and np.isfinite(table[system][i][metric]) and np.isfinite(table[other][i][metric])]
            if len(ids) < 2:
                continue
            r = paired([table[system][i][metric] for i in ids], [table[other][i][metric] for i in ids],
                       args.bootstrap, rng)
            verdict = verdict_of(r, args.alpha)
            rows += 1
            print(f"| {metric} | {other} | {r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] | "
                  f"{r['wins']} / {r['losses']} of {r['n']} | {r['p']:.2g} | {verdict} |")
    if not rows:
        raise UserError(f"no metric scored on two or more of the same files for {system} and {', '.join(others)}")


if __name__ == "__main__":
    run_main(main)
