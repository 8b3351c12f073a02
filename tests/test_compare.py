"""compare.py: paired tests say ahead only where the per-file differences say so, for both JSON layouts."""
import json

import numpy as np
import pytest

import compare
from audio import UserError


def harness_json(path, values):
    path.write_text(json.dumps({"systems": {name: {"per_file": [{"id": f"{i:03d}", "pesq_wb": v} for i, v in enumerate(vs)]}
                                            for name, vs in values.items()}}))
    return path


def verdicts(capsys):
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| pesq_wb")]
    return {r[2].strip(): r[-2].strip() for r in rows}


def test_ahead_behind_on_par(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = rng.uniform(1.5, 3.0, 60)
    values = {"ours": base + 0.2 + 0.05 * rng.standard_normal(60),
              "peer_worse": base, "peer_better": base + 0.5, "peer_same": base + 0.2 + 0.3 * rng.standard_normal(60)}
    values["peer_same"] += values["ours"].mean() - values["peer_same"].mean()  # equal means, noisy differences
    compare.main([str(harness_json(tmp_path / "bench.json", values)), "--metrics", "pesq_wb"])
    assert verdicts(capsys) == {"peer_worse": "ahead", "peer_better": "behind", "peer_same": "on par"}


def test_a_rank_shift_the_mean_contradicts_is_on_par(tmp_path, capsys):
    """Most files a little better, a few much worse: Wilcoxon rejects, the mean points the other way."""
    base = np.linspace(1.5, 3.0, 55)
    d = np.r_[np.full(50, 0.1), np.full(5, -2.0)]
    values = {"ours": base + d, "peer": base}
    compare.main([str(harness_json(tmp_path / "bench.json", values)), "--metrics", "pesq_wb"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| pesq_wb"))
    p = float(row.split("|")[-3])
    assert p < 0.05 and d.mean() < 0  # the test alone would have said "behind" (or "ahead")
    assert row.split("|")[-2].strip() == "on par"


def test_reads_evaluate_json_and_refuses_unknown_systems(tmp_path, capsys):
    rng = np.random.default_rng(1)
    files = [{"id": str(i), "noisy": {"pesq_wb": 1.2 + 0.1 * rng.random()}, "unet": {"pesq_wb": 2.0 + 0.1 * rng.random()},
              "seconds": 3.0} for i in range(20)]
    (tmp_path / "r.json").write_text(json.dumps({"per_file": files}))
    compare.main([str(tmp_path / "r.json"), "--metrics", "pesq_wb"])
    assert verdicts(capsys) == {"noisy": "ahead"}
    with pytest.raises(UserError, match="no system 'dfn3'"):
        compare.main([str(tmp_path / "r.json"), "--system", "dfn3"])


def test_two_models_from_two_json_files(tmp_path, capsys):
    """new.json old.json: each model's evaluate.py run on the same files, paired by file id."""
    rng = np.random.default_rng(2)
    base = rng.uniform(1.5, 3.0, 40)

    def run(path, unet, order, prefix="f"):
        files = [{"id": f"{prefix}{i}", "noisy": {"pesq_wb": 1.2}, "unet": {"pesq_wb": unet[i]}} for i in order]
        path.write_text(json.dumps({"per_file": files}))
        return str(path)

    new = run(tmp_path / "new.json", base + 0.3 + 0.05 * rng.standard_normal(40), range(40))
    old = run(tmp_path / "old.json", base, reversed(range(40)))  # another order: pairs are made by id
    compare.main([new, old, "--against", "old:unet", "--metrics", "pesq_wb"])
    assert verdicts(capsys) == {"old:unet": "ahead"}
    other = run(tmp_path / "other.json", base, range(40), prefix="g")  # no file in common
    with pytest.raises(UserError, match="no metric scored on two or more of the same files"):
        compare.main([new, other, "--against", "other:unet", "--metrics", "pesq_wb"])
