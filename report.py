"""
A listening report: one self-contained folder with an HTML page that opens from disk in any browser.

    report/index.html       the summary tables, the bar chart, then per file (worst first) the
                            input, the output and the clean reference (where there is one) as
                            audio players, each with its spectrogram, and the file's scores
    report/audio/*.wav      16-bit PCM, 16 kHz (every browser plays it)
    report/img/*.png        spectrograms on the fixed dB scale of audio.py, and the bar chart

evaluate.py writes it beside its JSON; write_report() takes plain arrays, so anything that has
inputs and outputs can make one.
"""
import html
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from audio import AudioConfig, atomic_save, spectrogram_db

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.file{border-top:2px solid #888;margin-top:2em;padding-top:.5em}
.row{display:flex;gap:1em;flex-wrap:wrap}.row figure{margin:0}.row img{width:340px;display:block}
audio{width:340px}figcaption{font-weight:600}"""


def markdown_tables_to_html(text):
    """The markdown evaluate.py prints (### headings, pipe tables, plain lines) as HTML."""
    out, table = [], []

    def flush():
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table.clear()

    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("#"):
            out.append(f"<h3>{html.escape(line.lstrip('#').strip())}</h3>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def spectrogram_png(x, path, cfg, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.4, 2.4))
    ax.imshow(spectrogram_db(x, cfg), origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
              extent=(0, len(x) / cfg.sample_rate, 0, cfg.sample_rate / 2000))
    ax.set(title=title, xlabel="s", ylabel="kHz")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)


def write_report(folder, title, summary_markdown, items, chart=None, sr=AudioConfig.sample_rate):
    """items: [{"id", "scores" (text), "input", "output", "clean" (or None)}], already in the order to show."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)  # a report is rebuilt whole: no players left over from another run
    (folder / "audio").mkdir(parents=True)
    (folder / "img").mkdir()
    cfg = AudioConfig(sample_rate=sr)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>", markdown_tables_to_html(summary_markdown)]
    if chart is not None and Path(chart).exists():
        shutil.copy(chart, folder / "img" / "chart.png")
        parts.append("<img src='img/chart.png' alt='bar chart of the scores' style='width:100%'>")
    parts.append(f"<h2>Listen: {len(items)} files, worst first</h2>")
    for i, item in enumerate(items):
        figures = []
        for kind in ("input", "output", "clean"):
            x = item.get(kind)
            if x is None:
                continue
            name = f"{i:03d}_{kind}"
            sf.write(folder / "audio" / f"{name}.wav", np.clip(x, -1, 1), sr, subtype="PCM_16")
            spectrogram_png(x, folder / "img" / f"{name}.png", cfg, f"{kind}")
            figures.append(f"<figure><figcaption>{kind}</figcaption><audio controls preload='none' "
                           f"src='audio/{name}.wav'></audio><img src='img/{name}.png' alt='{kind} spectrogram'></figure>")
        parts.append(f"<div class='file'><h3>{html.escape(str(item['id']))}</h3><p>{html.escape(item['scores'])}</p>"
                     f"<div class='row'>{''.join(figures)}</div></div>")
    parts.append("</body></html>")
    (folder / "index.html").write_text("\n".join(parts), encoding="utf-8")
    return folder / "index.html"
