// The page: a file in, before/after players, spectrograms as denoise.py --plot draws them, the floor as a slider,
// a WAV download. window.denoise(blob, floorDb) -> Promise<Blob> gives scripts and tests the same WAV.
import { Model, UserError, decode, denoiseChannels, encodeWav, spectra } from "./denoiser.js";

const $ = (id) => document.getElementById(id);
const MAGMA = ["000004", "0a0822", "1d1147", "36106b", "51127c", "6a1c81", "832681", "9c2e7f", "b73779", "d0416f",
  "e75263", "f56b5c", "fc8961", "fea772", "fec488", "fde2a3", "fcfdbf"].map((h) => [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16)));
const VMIN = -80, VMAX = 0; // the plot's colour range in dB, as denoise.py --plot

// ?model=PATH loads another export from this server (one made by python export.py), e.g. /web/?model=../runs/x/unet.onnx
const modelParam = new URLSearchParams(location.search).get("model");
const modelUrl = modelParam && new URL(modelParam, location.href);
const modelReady = modelUrl && modelUrl.origin !== location.origin
  ? Promise.reject(new UserError("The model must come from this page's own server: nothing is fetched from elsewhere."))
  : Model.load(modelUrl ? modelUrl.href : undefined);
let current = null; // the decoded input {name, channels, rate}
let queue = Promise.resolve(), outputUrl = null, inputUrl = null;

// One job at a time (onnxruntime-web runs one inference per session at once): a new file, a new floor or a
// window.denoise call waits for the job in progress. Returns the job's own promise.
function serial(task) {
  const job = queue.then(task, task);
  queue = job.catch(() => {});
  return job;
}

function message(text, isError = false) {
  $("status").textContent = isError ? "" : text;
  $("error").textContent = isError ? text : "";
}

function progress(done, total) {
  $("progress").max = total;
  $("progress").value = done;
  $("status").textContent = `Denoising… ${done} of ${total} chunk${total > 1 ? "s" : ""}`;
}

function say(e) {
  if (!(e instanceof UserError)) console.error(e);
  message(e instanceof UserError ? e.message : `Something went wrong: ${e.message}`, true);
}

// ----------------------------------------------------------------------------- for scripts and tests
window.denoise = (blob, floorDb) => serial(async () => {
  const model = await modelReady;
  const { channels, rate } = await decode(blob);
  const out = await denoiseChannels(model, channels, rate, floorDb ?? model.floorDb);
  return encodeWav(out, rate);
});

// ----------------------------------------------------------------------------- the page
function colour(db) {
  const u = Math.min(1, Math.max(0, (db - VMIN) / (VMAX - VMIN))) * (MAGMA.length - 1);
  const i = Math.min(MAGMA.length - 2, Math.floor(u)), w = u - i;
  return MAGMA[i].map((c, k) => c + w * (MAGMA[i + 1][k] - c));
}

function draw(canvas, { db, bins, frames }) {
  canvas.width = frames;
  canvas.height = bins;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(frames, bins);
  for (let f = 0; f < bins; f++) {
    const y = bins - 1 - f; // low frequencies at the bottom
    for (let t = 0; t < frames; t++) {
      const [r, g, b] = colour(db[f * frames + t]), at = 4 * (y * frames + t);
      image.data[at] = r; image.data[at + 1] = g; image.data[at + 2] = b; image.data[at + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
}

async function run(floorDb) {
  const model = await modelReady;
  const { name, channels, rate } = current;
  $("download").setAttribute("aria-disabled", "true"); // never offer a half-made result
  $("progress").value = 0;
  const out = await denoiseChannels(model, channels, rate, floorDb, progress);
  const wav = encodeWav(out, rate);
  if (outputUrl) URL.revokeObjectURL(outputUrl);
  outputUrl = URL.createObjectURL(wav);
  $("after").src = outputUrl;
  $("download").href = outputUrl;
  $("download").download = `${name.replace(/\.[^.]*$/, "")}_denoised.wav`;
  $("download").setAttribute("aria-disabled", "false");
  const images = await spectra(model, channels, rate, floorDb);
  images.forEach((image, k) => draw($(`spec${k}`), image));
  $("plot-note").textContent = `Spectrograms of the first channel${images[0].seconds >= 30 ? "'s first 30 s" : ""}, `
    + `${model.audio.sample_rate / 2000} kHz at the top; colours from ${VMIN} to ${VMAX} dB (0 dB: a full-scale sine).`;
  message(`Done: ${(channels[0].length / rate).toFixed(1)} s, ${channels.length} channel${channels.length > 1 ? "s" : ""}, `
    + `${rate} Hz, floor ${floorDb} dB.`);
}

function open(file) {
  serial(async () => {
    message(`Reading ${file.name}…`);
    $("result").classList.add("hidden");
    $("download").setAttribute("aria-disabled", "true");
    current = null;
    const { channels, rate } = await decode(file);
    current = { name: file.name, channels, rate };
    if (inputUrl) URL.revokeObjectURL(inputUrl);
    inputUrl = URL.createObjectURL(file);
    $("before").src = inputUrl;
    await run(Number($("floor").value));
    $("result").classList.remove("hidden");
  }).catch(say);
}

$("file").addEventListener("change", (e) => e.target.files.length && open(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) open(e.dataTransfer.files[0]);
});
$("floor").addEventListener("input", () => { $("floor-value").textContent = $("floor").value; });
$("floor").addEventListener("change", () => current && serial(() => run(Number($("floor").value))).catch(say));

modelReady.then((model) => {
  $("floor").value = model.floorDb;
  $("floor-value").textContent = model.floorDb;
  $("model-info").textContent = `Model: ${String(model.meta.description || "").split("\n")[0]}`;
  message("Ready: choose or drop a recording.");
  document.body.dataset.ready = "true";
}).catch((e) => {
  say(e);
  $("file").disabled = true;
  document.body.dataset.ready = "failed";
});
