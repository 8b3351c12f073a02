// The denoiser in the browser: what denoise.py does, in the same order, on the same ONNX graph.
//
//   decode (the browser's decoder, at the file's own rate) -> every channel's RMS over the whole recording
//   -> chunks of about 10 s with context either side (on the model's frame grid, as denoise.denoise_stream)
//   -> each chunk resampled to the model's rate, one channel at a time through models/unet.onnx
//      (level, STFT, U-Net, subtraction with the floor, inverse STFT: all inside the graph)
//   -> resampled back, the context cut off -> a float WAV at the input's rate, channels and length
//
// Nothing leaves the page: the model and onnxruntime-web's WebAssembly come from this page's own server.
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give

export const MODEL_URL = new URL("../models/unet.onnx", import.meta.url).href;
export const GRAPH = "denoiser/1"; // onnx_backend.GRAPH: what the graph computes, and its version
const CHUNK_SECONDS = 10; // denoise.py --chunk-seconds

export class UserError extends Error {} // a message for the page, not a bug

// ----------------------------------------------------------------------------- the model
// The export's metadata (export.metadata): read from the file's protobuf, since onnxruntime-web does not expose it.
// ModelProto field 14 is metadata_props, each a StringStringEntryProto {1: key, 2: value}.
function readVarint(bytes, pos) {
  let value = 0, shift = 1;
  for (;;) {
    const b = bytes[pos++];
    value += (b & 0x7f) * shift;
    if (b < 0x80) return [value, pos];
    shift *= 128;
  }
}

function protoFields(bytes, start = 0, end = bytes.length) {
  const fields = [];
  let pos = start;
  while (pos < end) {
    let tag;
    [tag, pos] = readVarint(bytes, pos);
    const field = Math.floor(tag / 8), wire = tag % 8;
    if (wire === 0) { [, pos] = readVarint(bytes, pos); continue; }
    if (wire === 1) { pos += 8; continue; }
    if (wire === 5) { pos += 4; continue; }
    if (wire !== 2) throw new UserError("the model file is not an ONNX model");
    let length;
    [length, pos] = readVarint(bytes, pos);
    fields.push([field, pos, pos + length]);
    pos += length;
  }
  return fields;
}

export function onnxMetadata(bytes) {
  const text = new TextDecoder(), meta = {};
  for (const [field, a, b] of protoFields(bytes)) {
    if (field !== 14) continue;
    let key = "", value = "";
    for (const [f, s, e] of protoFields(bytes, a, b)) {
      if (f === 1) key = text.decode(bytes.subarray(s, e));
      if (f === 2) value = text.decode(bytes.subarray(s, e));
    }
    try { meta[key] = JSON.parse(value); } catch { meta[key] = value; }
  }
  return meta;
}

export class Model {
  static async load(url = MODEL_URL) {
    let bytes;
    try {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      bytes = new Uint8Array(await response.arrayBuffer());
    } catch (e) {
      throw new UserError(`The model could not be loaded from ${url} (${e.message}).`);
    }
    const meta = onnxMetadata(bytes);
    if (meta.graph !== GRAPH) {
      throw new UserError(`${url} is not an export of this repository's denoiser (graph ${meta.graph}, expected ${GRAPH}).`);
    }
    let session;
    try {
      session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    } catch (e) {
      throw new UserError(`onnxruntime-web could not load the model (${e.message}).`);
    }
    return new Model(session, meta);
  }

  constructor(session, meta) {
    this.session = session;
    this.meta = meta;
    this.audio = meta.audio; // sample_rate, n_fft, hop_length, db_min, db_max
    this.floorDb = meta.model_args.floor_db;
    if ("frame_grid" in meta) {
      this.frameGrid = meta.frame_grid;
      this.reachFrames = meta.reach_frames;
    } else { // an export made before the metadata held them (onnx_backend.OnnxDenoiser does the same)
      this.frameGrid = 2 ** meta.model_args.depth;
      this.reachFrames = (7 + 2 ** meta.model_args.temporal_blocks - 1) * 2 ** meta.model_args.depth;
    }
  }

  // The graph on one channel x (Float32Array at the model's rate) with the recording's rms: the named outputs,
  // each [batch, ...]. Inputs shorter than the STFT's reflect padding allows are zero-padded (OnnxDenoiser._run).
  async run(x, rms, floorDb, names = ["denoised"]) {
    const n = Math.max(x.length, this.audio.n_fft / 2 + 1);
    const wave = new Float32Array(n);
    wave.set(x);
    const feeds = {
      waveform: new ort.Tensor("float32", wave, [1, n]),
      rms: new ort.Tensor("float32", Float32Array.of(rms), [1, 1]),
      floor_db: new ort.Tensor("float32", Float32Array.of(floorDb), [1]),
    };
    return this.session.run(feeds, names);
  }

  async denoise(x, rms, floorDb) {
    const out = await this.run(x, rms, floorDb);
    return out.denoised.data.slice(0, x.length);
  }
}

// ----------------------------------------------------------------------------- reading audio
// The rate a file was recorded at, from its header, so that the output keeps it (the browser's decoder
// resamples to whatever rate it is asked for and does not say the original). WAV, FLAC, Ogg (Vorbis at its
// rate, Opus at 48 kHz as libsndfile decodes it), MP3 and AIFF; null for others.
export function headerSampleRate(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ascii = (at, n) => String.fromCharCode(...bytes.subarray(at, at + n));
  if (bytes.length < 12) return null;
  if (ascii(0, 4) === "RIFF" && ascii(8, 4) === "WAVE") {
    for (let pos = 12; pos + 8 <= bytes.length;) {
      const size = view.getUint32(pos + 4, true);
      if (ascii(pos, 4) === "fmt " && pos + 16 <= bytes.length) return view.getUint32(pos + 12, true);
      pos += 8 + size + (size % 2);
    }
    return null;
  }
  if (ascii(0, 4) === "fLaC" && bytes.length >= 21) { // STREAMINFO: 20 bits of rate at byte 18
    return (bytes[18] << 12) | (bytes[19] << 4) | (bytes[20] >> 4);
  }
  if (ascii(0, 4) === "OggS" && bytes.length >= 28 + 19) {
    const start = 27 + bytes[26]; // after the segment table of the first page
    if (ascii(start, 8) === "OpusHead") return 48000;
    if (ascii(start + 1, 6) === "vorbis") return view.getUint32(start + 12, true);
    return null;
  }
  if (ascii(0, 4) === "FORM" && (ascii(8, 4) === "AIFF" || ascii(8, 4) === "AIFC")) {
    for (let pos = 12; pos + 8 <= bytes.length;) {
      const size = view.getUint32(pos + 4, false);
      if (ascii(pos, 4) === "COMM" && pos + 26 <= bytes.length) { // an 80-bit float at byte 16 of the chunk
        const exponent = view.getUint16(pos + 16, false) & 0x7fff, mantissa = view.getUint32(pos + 18, false);
        return Math.round(mantissa * 2 ** (exponent - 16383 - 31));
      }
      pos += 8 + size + (size % 2);
    }
    return null;
  }
  let pos = 0; // MP3: skip an ID3v2 tag, then the first frame header
  if (ascii(0, 3) === "ID3" && bytes.length > 10) {
    pos = 10 + ((bytes[6] & 0x7f) << 21 | (bytes[7] & 0x7f) << 14 | (bytes[8] & 0x7f) << 7 | (bytes[9] & 0x7f));
  }
  for (const end = Math.min(bytes.length - 4, pos + 4096); pos < end; pos++) {
    if (bytes[pos] !== 0xff || (bytes[pos + 1] & 0xe0) !== 0xe0) continue;
    const version = (bytes[pos + 1] >> 3) & 3, index = (bytes[pos + 2] >> 2) & 3;
    if (version === 1 || index === 3) continue;
    return [44100, 48000, 32000][index] / { 3: 1, 2: 2, 0: 4 }[version];
  }
  return null;
}

// [channels of Float32Array], rate: the whole file, decoded by the browser at the file's own rate.
export async function decode(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (bytes.length === 0) throw new UserError("The file is empty.");
  const rate = headerSampleRate(bytes) || 48000;
  let buffer;
  try {
    buffer = await new OfflineAudioContext(1, 1, rate).decodeAudioData(bytes.buffer.slice(0));
  } catch {
    throw new UserError("Your browser cannot decode this file as audio.");
  }
  if (buffer.length === 0) throw new UserError("The file holds no audio samples.");
  const channels = Array.from({ length: buffer.numberOfChannels }, (_, c) => buffer.getChannelData(c));
  return { channels, rate: buffer.sampleRate };
}

// ----------------------------------------------------------------------------- resampling
// Band-limited resampling: a Kaiser-windowed sinc (16 zero crossings a side at the lower of the two rates,
// cut-off at 97% of the lower Nyquist), looked up in steps of 1/512 sample. Output length ceil(n out / in),
// as audio.resample. (denoise.py uses soxr; at the model's own rate neither touches the audio.)
const TAPS = 16, PHASES = 512, BETA = 8.6;

function besselI0(x) {
  let sum = 1, term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < 1e-12 * sum) break;
  }
  return sum;
}

const kernels = new Map();
function kernel(cutoff) {
  if (!kernels.has(cutoff)) {
    const half = Math.ceil(TAPS / cutoff), table = new Float32Array((2 * half) * (PHASES + 1));
    for (let p = 0; p <= PHASES; p++) {
      for (let i = 0; i < 2 * half; i++) {
        const d = (i - half + 1) - p / PHASES; // from the sample at offset i - half + 1 to the read position
        const u = d / half;
        const w = Math.abs(u) < 1 ? besselI0(BETA * Math.sqrt(1 - u * u)) / besselI0(BETA) : 0;
        const s = d === 0 ? 1 : Math.sin(Math.PI * cutoff * d) / (Math.PI * cutoff * d);
        table[p * 2 * half + i] = cutoff * s * w;
      }
    }
    kernels.set(cutoff, { half, table });
  }
  return kernels.get(cutoff);
}

export function resample(x, rateIn, rateOut) {
  if (rateIn === rateOut) return x;
  const n = Math.ceil(x.length * rateOut / rateIn), y = new Float32Array(n);
  const { half, table } = kernel(0.97 * Math.min(1, rateOut / rateIn));
  const step = rateIn / rateOut, width = 2 * half;
  for (let j = 0; j < n; j++) {
    const t = j * step, base = Math.floor(t), p = Math.round((t - base) * PHASES);
    const row = p * width;
    let acc = 0;
    for (let i = 0, k = base - half + 1; i < width; i++, k++) {
      if (k >= 0 && k < x.length) acc += x[k] * table[row + i];
    }
    y[j] = acc;
  }
  return y;
}

// ----------------------------------------------------------------------------- denoise.py's chunks
function pyRound(x) { // Python's round(): halves to the even neighbour
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function gcd(a, b) { return b === 0 ? a : gcd(b, a % b); }

// denoise.context_samples: more context either side of a chunk than the network and the STFT can see.
export function contextSamples(model, rate) {
  const a = model.audio;
  const frames = model.reachFrames + 2 * Math.floor(a.n_fft / a.hop_length);
  const seconds = Math.ceil(frames * a.hop_length / a.sample_rate * 4) / 4;
  return pyRound(seconds * rate);
}

// denoise.denoise_stream's chunk plan for n samples at rate: [start, end, from, to] of each chunk and its context.
export function chunkPlan(model, n, rate, chunkSeconds = CHUNK_SECONDS) {
  const msr = model.audio.sample_rate, grid = model.audio.hop_length * model.frameGrid;
  const unit = grid * rate / gcd(grid * rate, msr);
  const step = Math.max(1, pyRound(chunkSeconds * rate / unit)) * unit;
  const ctx = Math.ceil(contextSamples(model, rate) / unit) * unit;
  const plan = [];
  for (let s = 0; s < n; s += step) {
    const e = Math.min(n, s + step);
    plan.push([s, e, Math.max(0, s - ctx), Math.min(n, e + ctx)]);
  }
  return plan;
}

// Per-channel RMS of the whole recording (denoise.recording_rms), summed in double precision.
export function recordingRms(channels) {
  return channels.map((x) => {
    let total = 0;
    for (let i = 0; i < x.length; i++) total += x[i] * x[i];
    return Math.sqrt(total / x.length);
  });
}

// The denoised channels at the input's rate. onProgress(done, total) after each chunk and channel.
export async function denoiseChannels(model, channels, rate, floorDb, onProgress = () => {}) {
  const n = channels[0].length, msr = model.audio.sample_rate;
  const rms = recordingRms(channels);
  if (rms.every((r) => r === 0)) throw new UserError("The recording is silent: there is nothing to denoise.");
  const plan = chunkPlan(model, n, rate), out = channels.map(() => new Float32Array(n));
  let done = 0;
  for (const [s, e, a, b] of plan) {
    for (let c = 0; c < channels.length; c++) { // one channel at a time, as denoise.py
      const x = resample(channels[c].subarray(a, b), rate, msr);
      const y = resample(await model.denoise(x, Math.fround(rms[c]), floorDb), msr, rate);
      const piece = new Float32Array(b - a); // padded or cut to the chunk's length
      piece.set(y.subarray(0, b - a));
      out[c].set(piece.subarray(s - a, e - a), s);
      onProgress(++done, plan.length * channels.length);
      await new Promise((resolve) => setTimeout(resolve, 0)); // let the page draw the progress
    }
  }
  return out;
}

// ----------------------------------------------------------------------------- writing
// A 32-bit float WAV (WAVE_FORMAT_IEEE_FLOAT), channels interleaved: nothing clipped or rounded.
export function encodeWav(channels, rate) {
  const n = channels[0].length, k = channels.length, data = n * k * 4;
  const view = new DataView(new ArrayBuffer(44 + data));
  const put = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  put(0, "RIFF"); view.setUint32(4, 36 + data, true); put(8, "WAVE");
  put(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 3, true); view.setUint16(22, k, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * k * 4, true); view.setUint16(32, k * 4, true);
  view.setUint16(34, 32, true);
  put(36, "data"); view.setUint32(40, data, true);
  for (let i = 0, at = 44; i < n; i++) {
    for (let c = 0; c < k; c++, at += 4) view.setFloat32(at, channels[c][i], true);
  }
  return new Blob([view.buffer], { type: "audio/wav" });
}

// ----------------------------------------------------------------------------- the plot's spectra
// |Y|, the predicted |N| and |S| in dB (audio.magnitude_to_db: 0 dB = a full-scale sine) of the first channel's
// first 30 s at the model's rate, as denoise.py --plot draws them: [{db: Float32Array(bins * frames), bins, frames}].
export async function spectra(model, channels, rate, floorDb) {
  const x = resample(channels[0].subarray(0, Math.min(channels[0].length, 30 * rate)), rate, model.audio.sample_rate);
  const rms = recordingRms(channels)[0];
  const names = ["magnitude", "noise_magnitude", "denoised_magnitude"];
  const out = await model.run(x, Math.fround(rms), floorDb, names);
  const a = model.audio, bins = a.n_fft / 2, ref = a.n_fft / 4; // the Nyquist bin dropped, as the plot does
  return names.map((name) => {
    const t = out[name], frames = t.dims[2], db = new Float32Array(bins * frames);
    for (let f = 0; f < bins; f++) {
      for (let i = 0; i < frames; i++) {
        const v = 20 * Math.log10(Math.max(t.data[f * frames + i] / ref, 10 ** (a.db_min / 20)));
        db[f * frames + i] = Math.min(a.db_max, Math.max(a.db_min, v));
      }
    }
    return { db, bins, frames, seconds: x.length / a.sample_rate, rate: a.sample_rate };
  });
}
