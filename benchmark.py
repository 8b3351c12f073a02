"""
Speed and memory figures for denoising and training, on the CPU. Prints, asserts nothing.

    python benchmark.py                          # everything, at the real sizes (about 15-30 min on 2 cores)
    python benchmark.py --what rtf onnx          # some of it
    python benchmark.py --what light memory --python .venv-denoise/bin/python   # the light runtime
    python benchmark.py --seconds 5 --long-minutes 0.2 --files 2 --repeats 1 --train-steps 2 --loader-items 32
                                                 # a smoke run: same code, tiny sizes

Measurements (--what): rtf (denoise.denoise_array on a --seconds 16 kHz file, beside noisereduce
when installed), onnx (the exported graph in onnxruntime vs the PyTorch model: output agreement and
RTF), light (denoise.py under --python: start-up plus a 5 s file, and marginal RTF beside
noisereduce's), startup (`python denoise.py one.wav`, and its import + model-load part), folder (--files short
files through one denoise.py process), memory (peak RSS of denoise.py on a --long-minutes
48 kHz stereo file), train (train.py's step: samples/s, and its FLOP/s against the machine's
measured convolution FLOP/s), loader (dataset.RemixDataset items/s, 0 and 2 workers), throughput
(train.py's whole step, mixing included: seconds of audio trained per second, with the mixtures made
by DataLoader or in the device's memory, dataset.DeviceRemixer; on the CPU, and on a GPU when there is one),
browser (the web page in headless Chromium on a --seconds file: page load, and the time window.denoise takes,
beside denoise.py's light path on the same file and the two outputs' agreement).
Test audio is generated (demo_corpus's procedural voice and noise families) into a temporary
folder and deleted at the end. Torch uses --threads threads (OMP_NUM_THREADS is set before
torch is imported, and passed on to the denoise.py subprocesses).
"""
import functools
import io
import itertools
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent
WHAT = ("rtf", "onnx", "light", "startup", "folder", "memory", "train", "loader", "throughput", "browser")
NOISES = ("babble", "fan", "traffic", "rain", "pink_hiss", "hum")


def parse_args(argv=None):
    from audio import arg_parser
    p = arg_parser(__doc__)
    p.add_argument("--model", type=Path, default=Path("models/unet.pt"),
                   help="checkpoint to time (if missing: an untrained model of the default size, same compute)")
    p.add_argument("--threads", type=int, default=2, help="torch (and onnxruntime) threads")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter of the denoise.py processes (light, startup, folder, memory), e.g. "
                        ".venv-denoise/bin/python for the light runtime (default: this one)")
    p.add_argument("--what", nargs="+", choices=("all",) + WHAT, default=["all"], help="which figures to measure")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the rtf/onnx test file")
    p.add_argument("--long-minutes", type=float, default=60.0, help="length of the memory test file (48 kHz stereo)")
    p.add_argument("--files", type=int, default=200, help="files in the folder test")
    p.add_argument("--file-seconds", type=float, default=3.0, help="length of each folder-test file")
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs (after one warm-up)")
    p.add_argument("--train-steps", type=int, default=20, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--data-dir", type=Path, default=Path("data/processed"), help="prepared set for the loader test")
    p.add_argument("--loader-items", type=int, help="items per loader pass (None: one epoch of the train split)")
    p.add_argument("--throughput-batch", type=int, help="batch size of the throughput test (None: the model's training batch)")
    p.add_argument("--band-widths", type=int, nargs="*", default=[16], metavar="C",
                   help="throughput: also time band U-Nets (--arch bands) of these widths beside --model")
    p.add_argument("--mixing", nargs="+", choices=("loader", "device"), default=["loader", "device"],
                   help="throughput: where the training mixtures are made")
    p.add_argument("--tmp", type=Path, help="where to write the test audio (None: the system's temp folder)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- helpers
def best_of(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def speech_in_noise(seconds, sr, seed=0, snr_db=5.0):
    """Procedural Hindi-like speech with pauses, in noise that changes family every 10 s, at -25 dBFS."""
    import demo_corpus as dc
    from audio import mix
    rng, n = np.random.default_rng(seed), int(seconds * sr)
    parts, i = [], 0
    while sum(map(len, parts)) < n:
        parts.append(dc.synth_speech(dc.DEMO_SENTENCES[i % len(dc.DEMO_SENTENCES)], dc.SPEAKERS[i % len(dc.SPEAKERS)],
                                     sr, engine="procedural"))
        parts.append(np.zeros(int(rng.uniform(0.2, 0.8) * sr), np.float32))
        i += 1
    noise = np.concatenate([dc.synth_noise(NOISES[k % len(NOISES)], min(10 * sr, n - s) / sr, sr, rng)
                            for k, s in enumerate(range(0, n, 10 * sr))])
    return mix(np.concatenate(parts)[:n], noise, snr_db, -25.0)[0]


def run_measured(cmd):
    """Run a command; returns (wall seconds, peak RSS in MB) via /usr/bin/time -v, else getrusage."""
    timer = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None  # GNU time, for -v
    t = time.perf_counter()
    r = subprocess.run(([timer, "-v"] if timer else []) + cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed: {r.stderr.strip()[-500:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    if m:
        return wall, int(m.group(1)) / 1024
    import resource  # the largest child so far, in KB on Linux
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def report(ctx, name, value, settings):
    print(f"{name}: {value}   [{settings}]", flush=True)
    ctx.rows.append((name, value, settings))


def denoise_cmd(ctx, *args):
    return [ctx.python, "denoise.py", *map(str, args), "--model", str(ctx.model_path), "--overwrite",
            "--threads", str(ctx.args.threads)]


def load_runner_code(ctx):
    """python -c code that imports denoise.py and loads the model as denoise.py would (PyTorch or onnxruntime)."""
    return (f"import denoise; denoise.load_runner(denoise.parse_args(['--info', '--model', {str(ctx.model_path)!r}, "
            f"'--threads', '{ctx.args.threads}']))")


# ----------------------------------------------------------------------------- measurements
def bench_rtf(ctx):
    """1. Real-time factor of denoise.py's core on a 16 kHz file, and noisereduce's on the same file."""
    import denoise
    audio, secs = ctx.clip(), ctx.args.seconds
    t = best_of(lambda: denoise.denoise_array(ctx.model, audio[None], ctx.sr), ctx.args.repeats)
    setting = f"{secs:g} s 16 kHz mono, CPU, {ctx.args.threads} threads, best of {ctx.args.repeats} after a warm-up"
    report(ctx, "RTF denoise.denoise_array", f"{t / secs:.4f} ({secs / t:.0f}x real time)", setting + ", 10 s chunks")
    try:
        import noisereduce
    except ImportError:
        print("noisereduce is not installed (pip install noisereduce): its comparison is skipped")
        return
    from importlib.metadata import version
    t2 = best_of(lambda: noisereduce.reduce_noise(y=audio, sr=ctx.sr, stationary=False), ctx.args.repeats)
    report(ctx, "RTF noisereduce (non-stationary)", f"{t2 / secs:.4f}; the U-Net takes {t / t2:.1f}x its time",
           f"noisereduce {version('noisereduce')} defaults (n_jobs=1), same file")


def bench_onnx(ctx):
    """7. The exported denoiser (export.py: one graph, STFT to inverse STFT) in onnxruntime against the PyTorch
    model: how far apart their outputs are (SI-SDR of one against the other) on a 16 kHz mono file and a 44.1 kHz
    stereo one, and the RTF of both through denoise.denoise_array."""
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed (pip install onnx onnxscript onnxruntime): ONNX skipped")
        return
    import torch
    import denoise
    from audio import resample, si_sdr
    from onnx_backend import OnnxDenoiser
    path, how = ctx.onnx_path()
    onnx_runner, torch_runner = OnnxDenoiser(path, ctx.args.threads), denoise.TorchDenoiser(ctx.model)
    clip, runs, secs = ctx.clip()[None], ctx.args.repeats, ctx.args.seconds
    stereo = resample(np.concatenate([clip, np.roll(clip, ctx.sr // 3) * 0.8]), ctx.sr, 44100)
    for name, audio, sr in (("16 kHz mono", clip, ctx.sr), ("44.1 kHz stereo", stereo, 44100)):
        a, b = (torch.from_numpy(denoise.denoise_array(r, audio, sr)).double() for r in (onnx_runner, torch_runner))
        report(ctx, f"onnxruntime vs PyTorch output, {name}", "SI-SDR " + ", ".join(
            f"{v:.1f}" for v in si_sdr(a, b, eps=0).tolist()) + " dB (per channel)", f"{secs:g} s, {how}")
    t_torch = best_of(lambda: denoise.denoise_array(torch_runner, clip, ctx.sr), runs)
    t_ort = best_of(lambda: denoise.denoise_array(onnx_runner, clip, ctx.sr), runs)
    report(ctx, "RTF denoise_array, onnxruntime (whole graph)", f"{t_ort / secs:.4f} (PyTorch {t_torch / secs:.4f}; "
           f"PyTorch/onnxruntime time {t_torch / t_ort:.2f})", f"{secs:g} s 16 kHz mono, 10 s chunks, "
           f"{ctx.args.threads} threads, onnxruntime {onnxruntime.__version__}, best of {runs} after a warm-up")


def bench_light(ctx):
    """8. The light runtime as a user meets it, whole process (denoise.py under --python, e.g. a venv made from
    requirements-denoise.txt): start-up plus a 5 s file, and the marginal RTF ((t(5 s + --seconds) - t(5 s)) /
    --seconds), beside noisereduce's marginal RTF on the same audio (in this process)."""
    probe = subprocess.run([ctx.python, "-c", "import torch"], capture_output=True)
    short, long_ = ctx.tmp / "five.wav", ctx.tmp / "long16.wav"
    five = speech_in_noise(5.0, ctx.sr, seed=2)
    long_audio = np.concatenate([five, ctx.clip()])
    sf.write(short, five, ctx.sr, subtype="PCM_16")
    sf.write(long_, long_audio, ctx.sr, subtype="PCM_16")
    run = lambda f: lambda: subprocess.run(denoise_cmd(ctx, f, "-o", f.with_name(f.stem + "_out.wav")), cwd=ROOT,
                                           check=True, capture_output=True)
    runs, secs = ctx.args.repeats, ctx.args.seconds
    t5, t_long = best_of(run(short), runs), best_of(run(long_), runs)
    env = f"{ctx.python} ({'PyTorch importable' if probe.returncode == 0 else 'no PyTorch'}), {ctx.args.threads} threads"
    report(ctx, "start-up + 5 s file, python denoise.py five.wav", f"{t5:.2f} s", f"16 kHz mono PCM_16, {env}, "
           f"best of {runs} after a warm-up")
    report(ctx, "marginal RTF, python denoise.py", f"{(t_long - t5) / secs:.4f}",
           f"(t({5 + secs:g} s) - t(5 s)) / {secs:g} s, same files, {env}")
    try:
        import noisereduce
    except ImportError:
        print("noisereduce is not installed (pip install noisereduce): its comparison is skipped")
        return
    from importlib.metadata import version
    n5 = best_of(lambda: noisereduce.reduce_noise(y=five, sr=ctx.sr, stationary=False), runs)
    n_long = best_of(lambda: noisereduce.reduce_noise(y=long_audio, sr=ctx.sr, stationary=False), runs)
    report(ctx, "marginal RTF, noisereduce (non-stationary)", f"{(n_long - n5) / secs:.4f} (plain RTF on "
           f"{5 + secs:g} s: {n_long / (5 + secs):.4f})", f"noisereduce {version('noisereduce')} defaults (n_jobs=1), "
           f"in-process, same audio, best of {runs}")


def bench_startup(ctx):
    """4. Whole-process start-up on a 1-second file, split into import + model load and the rest."""
    one = ctx.tmp / "one.wav"
    sf.write(one, ctx.clip()[:ctx.sr], ctx.sr, subtype="PCM_16")
    run = lambda cmd: lambda: subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    runs = ctx.args.repeats
    t_all = best_of(run(denoise_cmd(ctx, one, "-o", ctx.tmp / "one_out.wav")), runs)
    t_load = best_of(run([ctx.python, "-c", load_runner_code(ctx)]), runs)
    ctx.startup = t_all
    setting = f"best of {runs} after a warm-up, {ctx.args.threads} threads, {ctx.python}"
    report(ctx, "start-up python denoise.py one.wav (1 s)", f"{t_all:.2f} s", setting)
    report(ctx, "  of which import + load_runner", f"{t_load:.2f} s; reading, denoising, writing {t_all - t_load:.2f} s",
           setting)


def bench_folder(ctx):
    """3. Many short files through one denoise.py process (the model is loaded once)."""
    folder, out = ctx.tmp / "folder", ctx.tmp / "folder_out"
    folder.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    clip, n = ctx.clip(), int(ctx.args.file_seconds * ctx.sr)
    clip = np.tile(clip, n // len(clip) + 2)
    files = []
    for i in range(ctx.args.files):  # different stretches of the test clip
        s = (i * 27_211) % (len(clip) - n)
        files.append(folder / f"f{i:04d}.wav")
        sf.write(files[-1], clip[s:s + n], ctx.sr, subtype="PCM_16")
    wall, _ = run_measured(denoise_cmd(ctx, *files, "-o", out))
    extra = ""
    if getattr(ctx, "startup", None):
        extra = f"; {len(files) / max(1e-9, wall - ctx.startup):.1f} files/s after start-up"
    report(ctx, "folder through one denoise.py", f"{len(files) / wall:.1f} files/s ({wall:.1f} s){extra}",
           f"{len(files)} files of {ctx.args.file_seconds:g} s, 16 kHz PCM_16, one run, {ctx.args.threads} threads")


def write_long(path, minutes, sr, rate=48000):
    """A long stereo PCM_16 WAV written block by block: the test clip at `rate`, shifted every minute."""
    from audio import resample
    base = resample(speech_in_noise(min(60.0, minutes * 60), sr, seed=1)[None], sr, rate)[0]
    stereo = np.stack([base, np.roll(base, rate // 3) * 0.8], axis=1)
    n, done, k = int(minutes * 60 * rate), 0, 0
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as f:
        while done < n:
            block = np.roll(stereo, k * 7919, axis=0)[: n - done]
            f.write(np.clip(block, -1, 1))
            done, k = done + len(block), k + 1
    return n / rate


def bench_memory(ctx):
    """2. Peak resident memory (and speed) of denoise.py on a long 48 kHz stereo file."""
    src, out = ctx.tmp / "long.wav", ctx.tmp / "long_denoised.wav"
    secs = write_long(src, ctx.args.long_minutes, ctx.sr)
    size = src.stat().st_size / 1e6
    try:
        wall, peak = run_measured(denoise_cmd(ctx, src, "-o", out))
    finally:
        for p in (src, out):
            p.unlink(missing_ok=True)
    _, base = run_measured([ctx.python, "-c", load_runner_code(ctx)])
    setting = f"{secs / 60:g} min 48 kHz stereo PCM_16 WAV ({size:.0f} MB), {ctx.args.threads} threads, one run"
    report(ctx, "peak RSS python denoise.py long.wav", f"{peak:.0f} MB (import + load_runner alone: {base:.0f} MB)",
           setting + f", {ctx.python}")
    report(ctx, "RTF python denoise.py long.wav", f"{wall / secs:.4f} ({wall:.0f} s wall)",
           setting + ", whole process with resampling 48->16->48 kHz")


def bench_train(ctx):
    """5. train.py's step on the CPU with the settings that trained the model (channels_last, bf16 autocast
    and plain float32): samples/s, and FLOP/s against a measured conv's FLOP/s."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from losses import LossWeights, loss_fn
    from unet import NoiseSubtractionDenoiser
    d = ctx.train_config  # batch size, segment length, optimiser and loss settings, from the checkpoint
    if d is None:
        print(f"{ctx.model_path.name} records no training settings (ckpt['config']): training step skipped")
        return
    n = round(d.segment_seconds * ctx.model.audio.sample_rate)
    g = torch.Generator().manual_seed(0)
    voice = 0.05 * torch.randn(d.batch_size, n, generator=g)
    noisy = voice + 0.05 * torch.randn(d.batch_size, n, generator=g)
    for amp in (torch.bfloat16, None):  # train.py picks bf16 on CPUs with AMX or AVX512-BF16, else float32
        name = str(amp or torch.float32).replace("torch.", "")
        model = NoiseSubtractionDenoiser(ctx.model.config, ctx.model.audio).train()
        model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=d.lr, weight_decay=d.weight_decay)

        def step():
            loss, _ = loss_fn(model, noisy, voice, LossWeights(d.complex_weight, d.sisdr_weight), amp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), d.grad_clip)
            opt.step()

        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
        step()  # a second warm-up step
        steps = max(1, ctx.args.train_steps)
        t = best_of(lambda: [step() for _ in range(steps)], 1, warmup=0) / steps
        # the machine's convolution speed, on one of the model's own layers at the same batch size and dtype
        c, m = 2 * model.config.base_channels, 2 ** model.unet.depth
        frames = -(-(n // model.audio.hop_length + 1) // m) * m  # as the U-Net pads them
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(d.batch_size, c, model.audio.n_bins // 2, frames // 2)
        x = x.to(memory_format=torch.channels_last).requires_grad_()

        def conv_step():
            with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                y = conv(x)
            y.float().sum().backward()

        with FlopCounterMode(display=False) as fc:
            conv_step()
        t_conv = best_of(conv_step, max(3, ctx.args.repeats), warmup=2)
        model_gf, conv_gf = flops / t / 1e9, fc.get_total_flops() / t_conv / 1e9
        setting = (f"{name}, channels_last, batch "
                   f"{d.batch_size} x {d.segment_seconds:g} s, {ctx.args.threads} threads, mean of {steps} steps "
                   f"after 2 warm-up steps, AdamW, random audio")
        report(ctx, f"training step {name}", f"{d.batch_size / t:.1f} samples/s, "
               f"{d.batch_size * d.segment_seconds / t:.1f} audio-s/s ({t * 1000:.0f} ms/step)", setting)
        report(ctx, f"training FLOP/s vs machine conv FLOP/s {name}",
               f"{model_gf:.1f} / {conv_gf:.1f} GFLOP/s = {model_gf / conv_gf:.0%}",
               f"{flops / 1e9:.1f} GFLOP/step (FlopCounterMode: conv/matmul fwd+bwd; FFTs not counted); "
               f"conv {c}->{c} 3x3 on {list(x.shape)} fwd+bwd in {name}, best of {max(3, ctx.args.repeats)}")


def bench_loader(ctx):
    """6. DataLoader throughput of dataset.RemixDataset with 0 and 2 workers."""
    if not (ctx.args.data_dir / "manifest.csv").exists():
        print(f"no prepared set at {ctx.args.data_dir} (run python prepare_data.py, or pass --data-dir): loader skipped")
        return
    from torch.utils.data import DataLoader
    from dataset import RemixDataset
    d = ctx.train_config
    if d is None:
        print(f"{ctx.model_path.name} records no training settings (ckpt['config']): loader skipped")
        return
    ds = RemixDataset(ctx.args.data_dir, "train", d.segment_seconds, d.snr_range, d.level_range, 0, ctx.sr)
    items = min(len(ds), ctx.args.loader_items or len(ds))
    for workers in (0, 2):
        t, n = time.perf_counter(), 0
        for noisy, _ in DataLoader(ds, batch_size=d.batch_size, shuffle=True, num_workers=workers):
            n += len(noisy)
            if n >= items:
                break
        t = time.perf_counter() - t
        report(ctx, f"RemixDataset, {workers} workers", f"{n / t:.0f} items/s",
               f"{n} items of {d.segment_seconds:g} s, batch {d.batch_size}, {ctx.args.data_dir}, incl. worker start-up")


def bench_throughput(ctx):
    """7. train.py's steps with their mixing (epoch_batches, train_step): seconds of audio trained per second, for
    the --model's architecture and for each --arch-sizes band U-Net, with the --model's training settings (batch,
    crop, augmentations), the mixtures made in DataLoader workers or a batch at a time in the device's memory."""
    if not (ctx.args.data_dir / "manifest.csv").exists() or ctx.train_config is None:
        print(f"needs a prepared set at {ctx.args.data_dir} and a model with its training settings: throughput skipped")
        return
    import torch
    import train
    from audio import AudioConfig
    from dataset import DeviceRemixer, RemixDataset
    from losses import LossWeights
    from unet import BAND_HOP, ModelConfig, NoiseSubtractionDenoiser, describe, model_defaults
    d = ctx.train_config
    run = SimpleNamespace(seed=0, corpus_weights=[], batch_size=ctx.args.throughput_batch or d.batch_size, grad_clip=d.grad_clip)
    ds = RemixDataset(ctx.args.data_dir, "train", d.segment_seconds, d.snr_range, d.level_range, 0, ctx.sr,
                      d.eq_prob, d.noise_mix_prob, d.speed_prob)
    models = [(ctx.model.config, ctx.model.audio)] + [
        (ModelConfig(**dict(model_defaults("bands"), base_channels=c)), replace(ctx.model.audio, hop_length=BAND_HOP))
        for c in ctx.args.band_widths]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device, (config, audio) in itertools.product(devices, models):
        amp = train.pick_precision("auto", device)
        model = NoiseSubtractionDenoiser(config, audio).train().to(device)
        model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=d.lr, weight_decay=d.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        for mixing in ctx.args.mixing:
            data = SimpleNamespace(train_set=ds, workers=0 if device.type == "cpu" else 4,
                                   remixer=DeviceRemixer(ds, device) if mixing == "device" else None)
            batches = train.epoch_batches(data, 1, run, 0, 1, device)
            steps = min(ctx.args.train_steps, len(ds) // run.batch_size - 2)
            step = lambda: train.train_step(model, *next(batches), opt, sched, scaler, amp, LossWeights.from_args(d), run)
            step(), step()  # warm-up (and the loader's first batch)
            t = time.perf_counter()
            loss = sum(step() for _ in range(steps)).item()  # .item() waits for the device
            t = time.perf_counter() - t
            assert np.isfinite(loss)
            audio_s = steps * run.batch_size * d.segment_seconds
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {ctx.args.threads} threads"
            report(ctx, f"training throughput, {describe(model).split(',')[0]}, {mixing} mixing, {device.type}",
                   f"{audio_s / t:.1f} audio-s/s ({t / steps * 1000:.0f} ms/step)",
                   f"{name}, {str(amp or torch.float32).replace('torch.', '')}, {describe(model).split(', ')[1]}, STFT hop "
                   f"{audio.hop_length}, batch {run.batch_size} x {d.segment_seconds:g} s, {steps} steps after 2, "
                   f"{ctx.args.data_dir} with the model's augmentations, {data.workers} loader workers")


def bench_browser(ctx):
    """10. The web page (web/, browser.py) in headless Chromium: loading it with its model, then window.denoise on a
    --seconds 16 kHz file (WebAssembly, one thread), beside `python denoise.py` under --python on the same file
    (whole process) and the SI-SDR of one output against the other, on --model's export (the page loads it with
    ?model=, from the repository's own server)."""
    import browser
    absent = browser.missing()
    if absent:
        print("the browser benchmark needs " + ", ".join(absent) + ": skipped")
        return
    import torch
    from audio import si_sdr
    onnx_path, _ = ctx.onnx_path()
    if ROOT not in onnx_path.resolve().parents:
        print(f"the page loads models from the repository's own server, and {onnx_path} is outside it: "
              f"export the model inside the repository (python export.py --model X.pt): browser skipped")
        return
    clip, secs, runs = ctx.clip(), ctx.args.seconds, ctx.args.repeats
    wav = ctx.tmp / "page.wav"
    sf.write(wav, clip, ctx.sr, subtype="FLOAT")
    server = browser.Server()
    t = time.perf_counter()
    page = browser.Page(server, f"?model=/{onnx_path.resolve().relative_to(ROOT).as_posix()}")
    t_load = time.perf_counter() - t
    try:
        data = wav.read_bytes()
        page.denoise(data)  # a warm-up
        t_page = best_of(lambda: page.denoise(data), runs, warmup=0)
        got = sf.read(io.BytesIO(page.denoise(data)), dtype="float32")[0]
    finally:
        page.close()
        server.close()
    out = ctx.tmp / "page_py.wav"
    cmd = [ctx.python, "denoise.py", str(wav), "-o", str(out), "--overwrite", "--model", str(onnx_path), "--threads",
           str(ctx.args.threads)]
    t_py = best_of(lambda: subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True), runs)
    expected = sf.read(out, dtype="float32")[0]
    agree = si_sdr(torch.from_numpy(got).double(), torch.from_numpy(expected).double(), eps=0).item()
    setting = f"{secs:g} s 16 kHz mono float WAV, {onnx_path.name} of {ctx.model_path.name}, best of {runs} after a warm-up"
    report(ctx, "browser: page and model load", f"{t_load:.2f} s", "headless Chromium (Debian), "
           "onnxruntime-web WebAssembly, 1 thread, from a local static server")
    report(ctx, "browser: window.denoise", f"{t_page:.2f} s (RTF {t_page / secs:.4f})",
           setting + ", decoding, resampling, chunks and WAV encoding included")
    report(ctx, "browser: python denoise.py on the same file", f"{t_py:.2f} s whole process (RTF {t_py / secs:.4f})",
           setting + f", {ctx.python}, onnxruntime, {ctx.args.threads} threads")
    report(ctx, "browser: page output vs denoise.py output", f"SI-SDR {agree:.1f} dB", setting)


# ----------------------------------------------------------------------------- main
def load_or_make_model(args, tmp):
    """The model to time, its path, and the training settings it records (train.py's flags), if any."""
    from checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from unet import NoiseSubtractionDenoiser
    if args.model.exists():
        ckpt = load_checkpoint(args.model)
        runs = [ckpt] + ckpt.get("averaged_from", [])[::-1]  # an averaged model: its last run's settings
        config = next((SimpleNamespace(**r["config"]) for r in runs if "config" in r), None)
        return model_from_checkpoint(ckpt, args.model), args.model.resolve(), config
    print(f"no model at {args.model}: timing an untrained model of the default size (the same compute)")
    model = NoiseSubtractionDenoiser().eval()
    path = tmp / "untrained.pt"
    save_checkpoint(path, model)
    return model, path, None


def onnx_export(ctx):
    """The model's export: the one beside it if made from it (models/unet.onnx), else a fresh one in the temp folder."""
    from onnx_backend import export_of
    if export_of(ctx.model_path) is not None:
        return ctx.model_path.with_suffix(".onnx"), f"{ctx.model_path.with_suffix('.onnx').name} as shipped"
    import export
    from checkpoint import load_checkpoint
    path = ctx.tmp / "unet.onnx"
    used = export.export(ctx.model, path, load_checkpoint(ctx.model_path), ctx.model_path)
    return path, f"exported here ({used} exporter)"


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "") \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    load = " load average %.2f %.2f %.2f," % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return f"{cpu or platform.machine()}, {os.cpu_count()} cores,{load} Python {platform.python_version()}"


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch is imported, here and in subprocesses
        os.environ[var] = str(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    what = WHAT if "all" in args.what else [w for w in WHAT if w in args.what]
    (args.tmp or Path(tempfile.gettempdir())).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="denoise-bench-", dir=args.tmp) as tmp:
        ctx = SimpleNamespace(args=args, tmp=Path(tmp), rows=[], startup=None, python=args.python)
        ctx.model, ctx.model_path, ctx.train_config = load_or_make_model(args, ctx.tmp)
        ctx.sr = ctx.model.audio.sample_rate  # the test audio is made at the model's rate
        ctx.clip = functools.lru_cache(None)(lambda: speech_in_noise(args.seconds, ctx.sr))
        ctx.onnx_path = functools.lru_cache(None)(lambda: onnx_export(ctx))
        from unet import describe
        print(f"# {machine()}; torch {torch.__version__}, {args.threads} threads; model {ctx.model_path.name}: "
              f"{describe(ctx.model)}", flush=True)
        for name in what:
            print(f"\n## {name}", flush=True)
            globals()[f"bench_{name}"](ctx)
    print("\n| measurement | result | settings |\n|---|---|---|")
    for row in ctx.rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
