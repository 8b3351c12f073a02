"""
Offline, deterministic DEMO corpus for trying the repo without real data.

Speech: Hindi sentences (written for this repo) spoken by espeak-ng, reached through the
`espeakng-loader` wheel, which bundles libespeak-ng and its data. espeak-ng is GPL-3.0; the
wheel itself states no licence. We only call the library, we do not ship it. Without the
wheel a small procedural "speech-like" synthesiser (glottal pulses through formant
resonators) stands in. Noise: procedural families that resemble ESC-50 environmental
sounds (hiss, hum, babble, rain, wind, keyboard, engine, siren, traffic, fan).

This is NOT real data: a model trained on it learns to clean robotic TTS voices. Use real
recordings with `python prepare_data.py --speech-dir ... --noise-dir ...`.
"""

import ctypes
import logging
import os
import time
import warnings
import zlib
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

from audio import AudioConfig

log = logging.getLogger(__name__)

DEMO_SENTENCES = [
    "आज सुबह मौसम बहुत सुहावना था, इसलिए मैं पार्क में टहलने गया।",
    "माँ ने रसोई में गरम चाय और आलू के पराठे बनाए।",
    "बस स्टॉप पर बहुत भीड़ थी और बस देर से आई।",
    "कृपया दरवाज़ा बंद कर दीजिए, बाहर से ठंडी हवा आ रही है।",
    "मेरे छोटे भाई को क्रिकेट खेलना सबसे ज़्यादा पसंद है।",
    "हम अगले महीने अपनी दादी से मिलने गाँव जाएँगे।",
    "बाज़ार से एक किलो टमाटर और आधा किलो प्याज़ ले आना।",
    "कल रात तेज़ बारिश हुई, इसलिए सड़कों पर पानी भर गया।",
    "डॉक्टर ने कहा कि रोज़ सुबह थोड़ी देर व्यायाम करना चाहिए।",
    "ट्रेन ठीक सात बजे प्लेटफ़ॉर्म नंबर तीन से चलेगी।",
    "इस किताब की कहानी बहुत रोचक है, मैंने इसे दो दिन में पढ़ लिया।",
    "बच्चे स्कूल से लौटकर आँगन में पतंग उड़ा रहे हैं।",
    "क्या आप मुझे नज़दीकी डाकघर का रास्ता बता सकते हैं?",
    "दफ़्तर में आज एक ज़रूरी बैठक है, मुझे जल्दी निकलना होगा।",
    "गर्मियों में ठंडा नींबू पानी पीना सेहत के लिए अच्छा होता है।",
    "मेरी बहन ने संगीत प्रतियोगिता में पहला इनाम जीता।",
    "रविवार को हम सब मिलकर घर की सफ़ाई करते हैं।",
    "पड़ोस की दुकान पर ताज़ा दूध और गरम जलेबी मिलती है।",
    "फ़ोन की बैटरी खत्म हो गई है, चार्जर कहाँ रखा है?",
    "दिवाली पर पूरा मोहल्ला दीयों और रंगोली से सज जाता है।",
    "किसान सुबह जल्दी उठकर अपने खेतों में काम करने जाते हैं।",
    "पुस्तकालय में शांति बनाए रखें और धीरे से बात करें।",
    "मुझे पहाड़ों पर घूमना और नदी के किनारे बैठना अच्छा लगता है।",
    "आज खाने में दाल, चावल, रोटी और मिक्स सब्ज़ी बनी है।",
    "उसने नई साइकिल खरीदी और रोज़ उसी से कॉलेज जाता है।",
    "अस्पताल के बाहर एम्बुलेंस के लिए रास्ता खाली रखना चाहिए।",
    "शाम को छत पर बैठकर तारे देखना बहुत सुकून देता है।",
    "परीक्षा नज़दीक है, इसलिए सब विद्यार्थी मन लगाकर पढ़ रहे हैं।",
    "बिजली चली गई है, कृपया मोमबत्ती और माचिस ले आइए।",
    "हमारे शहर में नया मेट्रो स्टेशन अगले साल खुलेगा।",
    "दादाजी हर शाम रेडियो पर पुराने गाने सुनते हैं।",
    "चिड़ियाघर में हमने शेर, हाथी और रंग-बिरंगे तोते देखे।",
    "सब्ज़ी वाले ने कहा कि आज गोभी बहुत सस्ती है।",
    "मेहमान आने वाले हैं, जल्दी से मेज़ पर प्लेटें लगा दो।",
    "सर्दियों में गाजर का हलवा खाने का मज़ा ही कुछ और है।",
    "बैंक आज दोपहर दो बजे के बाद बंद रहेगा।",
    "मेरी घड़ी पाँच मिनट आगे चल रही है, इसे ठीक करना है।",
    "गली के कुत्ते रात भर भौंकते रहे और मैं सो नहीं पाया।",
    "हमने पिकनिक के लिए सैंडविच, फल और पानी की बोतलें रखीं।",
    "अध्यापक ने बच्चों को पेड़ लगाने का महत्व समझाया।",
    "यह सड़क बहुत व्यस्त रहती है, ध्यान से पार करना।",
    "मुझे एक गिलास पानी चाहिए, बहुत प्यास लगी है।",
    "होली के दिन सब लोग एक दूसरे पर रंग लगाते हैं।",
    "मेरा दोस्त अगले हफ़्ते मुंबई से दिल्ली आ रहा है।",
    "खिड़की खोल दो, कमरे में बहुत गर्मी हो रही है।",
    "इस दुकान के समोसे पूरे शहर में मशहूर हैं।",
    "कल सुबह छह बजे का अलार्म लगा देना, मुझे जल्दी उठना है।",
    "नल से पानी टपक रहा है, प्लंबर को बुलाना पड़ेगा।",
]

NOISE_FAMILIES = ("white_hiss", "pink_hiss", "hum", "babble", "rain", "wind",
                  "keyboard", "engine", "siren", "traffic", "fan")

# Speaker stand-ins: espeak-ng Hindi voice + variant, pitch (0-100) and rate (wpm).
# Only variants whose output is reproducible are used: f2, f3 and f5 (the "breath" voices)
# give different samples in every new process (not traced down; not the rand() seed), so no.
SPEAKERS = [
    {"voice": "hi+m1", "pitch": 40, "rate": 150, "sex": "m"},
    {"voice": "hi+f1", "pitch": 62, "rate": 170, "sex": "f"},
    {"voice": "hi+m3", "pitch": 32, "rate": 185, "sex": "m"},
    {"voice": "hi+f4", "pitch": 75, "rate": 140, "sex": "f"},
    {"voice": "hi+klatt", "pitch": 48, "rate": 160, "sex": "m"},
    {"voice": "hi+m7", "pitch": 55, "rate": 132, "sex": "m"},
    {"voice": "hi+klatt4", "pitch": 80, "rate": 178, "sex": "f"},
    {"voice": "hi+m8", "pitch": 66, "rate": 190, "sex": "f"},
]

# -----------------------------------------------------------------------------
# espeak-ng through ctypes

_espeak = None  # (lib, native sample rate, version) once initialised, False if unavailable
_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

def _espeak_lib():
    global _espeak
    if _espeak is None:
        try:
            import espeakng_loader
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_Info.restype = ctypes.c_char_p
            # AUDIO_OUTPUT_SYNCHRONOUS = 2: samples come through the callback, no audio device
            native_sr = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
            if native_sr <= 0:
                raise RuntimeError(f"espeak_Initialize returned {native_sr}")
            _espeak = (lib, native_sr, lib.espeak_Info(None).decode())
        except Exception as e:  # wheel missing, library or data broken
            log.debug("espeak-ng unavailable: %s", e)
            _espeak = False
    return _espeak or None

def have_espeak() -> bool:
    return _espeak_lib() is not None

def _espeak_pcm_here(text, voice, pitch, rate) -> bytes:
    lib, _, _ = _espeak_lib()
    chunks = []
    def collect(wav, n, events):
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0  # 0 = continue
    cb = _SYNTH_CB(collect)  # kept alive in this frame until synthesis is done
    lib.espeak_SetSynthCallback(cb)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"espeak-ng has no voice {voice!r}")
    lib.espeak_SetParameter(1, int(rate), 0)   # espeakRATE, words per minute
    lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH, 0-100
    b = text.encode("utf-8")
    lib.espeak_Synth(b, len(b) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, espeakCHARS_UTF8
    lib.espeak_Synchronize()
    return b"".join(chunks)

def _espeak_pcm(text, voice, pitch, rate) -> np.ndarray:
    # libespeak-ng keeps hidden state between utterances (pitch flutter index, AGC, filter
    # memories) that espeak_Initialize does not reset, so the same call gives different samples
    # depending on what was spoken before. To make every utterance independent of history we
    # speak it in a forked child of this process, whose espeak state is always the freshly
    # initialised one. A fork costs ~5 ms; without fork we accept history-dependent output.
    if not hasattr(os, "fork"):
        return np.frombuffer(_espeak_pcm_here(text, voice, pitch, rate), np.int16)
    r, w = os.pipe()
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork in threaded processes
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child: speak, send the samples, exit without running any Python cleanup
        code = 1
        try:
            os.close(r)
            data = _espeak_pcm_here(text, voice, pitch, rate)
            with os.fdopen(w, "wb") as f:
                f.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"espeak-ng failed on voice {voice!r} for text {text[:30]!r}")
    return np.frombuffer(data, np.int16)

# -----------------------------------------------------------------------------
# procedural voice: glottal pulses -> formant resonators, used as TTS fallback and for babble

# F1-F4 (Hz) of a, aa, i, u, e, o for an adult male voice
_VOWELS = np.array([[650, 1250, 2500, 3500], [750, 1150, 2450, 3400], [300, 2250, 2950, 3700],
                    [330, 850, 2350, 3300], [450, 1950, 2600, 3500], [480, 900, 2450, 3300]], float)
# vowel index of each vowel sign (matra) and independent vowel; a consonant alone carries "a"
_VOWEL_OF = dict(zip("ािीुूेैोौॉृआइईउऊएऐओऔऑऋ", [1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 2, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 2]))
_FRICATIVES = "सशषहफछचखज"

def _syllables(text):
    """Rough Devanagari syllables: (vowel index, starts with a fricative, ends a word)."""
    out = []
    for word in text.split():
        syl, prev = [], ""
        for ch in word:
            consonant = "\u0915" <= ch <= "\u0939" or "\u0958" <= ch <= "\u095f"
            if consonant and prev != "\u094d":  # a virama joins it to the previous consonant
                syl.append([0, ch in _FRICATIVES])
            elif "\u0904" <= ch <= "\u0914":  # independent vowel starts its own syllable
                syl.append([_VOWEL_OF.get(ch, 0), False])
            elif ch in _VOWEL_OF and syl:
                syl[-1][0] = _VOWEL_OF[ch]
            prev = ch
        syl = syl or [[0, False]]
        out += [(v, f, i == len(syl) - 1) for i, (v, f) in enumerate(syl)]
    return out

def _vocalise(syllables, f0, syl_rate, sr, rng, female=False, fric_gain=0.7):
    """Speech-like signal: pitch contour, syllable envelope, formants, fricative bursts."""
    durs = rng.uniform(0.7, 1.3, len(syllables)) / syl_rate
    bounds = np.concatenate([[0], np.cumsum((durs * sr).astype(int))])
    n = int(bounds[-1])
    t = np.arange(n) / sr
    # pitch: declination over the phrase, a random accent per syllable, a little vibrato
    knots = f0 * 2 ** (rng.normal(0, 0.08, len(syllables) + 1) - 0.25 * np.linspace(0, 1, len(syllables) + 1))
    f0_t = np.interp(t, np.concatenate([bounds[:-1], [n]]) / sr, knots) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = np.cumsum(f0_t / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal cycle
    glottal = signal.lfilter([1.0], [1, -1.9, 0.9025], pulses)  # two poles at 0.95: ~-12 dB/oct
    glottal = np.diff(glottal, prepend=0.0) + 0.02 * rng.standard_normal(n)  # lip radiation, breath
    scale = 1.17 if female else 1.0
    out = np.zeros(n)
    zi = np.zeros((4, 2))
    fric_sos = signal.butter(4, [2500, min(7000, 0.45 * sr)], "bandpass", fs=sr, output="sos")
    for i, (vowel, fric, word_end) in enumerate(syllables):
        a, b = bounds[i], bounds[i + 1]
        formants = _VOWELS[vowel] * scale * rng.uniform(0.93, 1.07, 4)
        sos = []
        for fc, bw in zip(formants, (80, 100, 150, 200)):
            rad = np.exp(-np.pi * bw / sr)
            sos.append([1 - rad, 0, 0, 1, -2 * rad * np.cos(2 * np.pi * fc / sr), rad * rad])
        seg, zi = signal.sosfilt(np.array(sos), glottal[a:b], zi=zi)
        m = b - a  # syllable envelope: quick rise, slower fall, a gap at word ends
        env = np.sin(np.pi * np.linspace(0, 1, m)) ** 0.6
        if word_end:
            env[int(0.8 * m):] *= np.linspace(1, 0, m - int(0.8 * m))
        out[a:b] = seg * env
        if fric:  # unvoiced consonant: a band-passed noise burst at the syllable onset
            k = min(m, int(rng.uniform(0.04, 0.09) * sr))
            burst = signal.sosfilt(fric_sos, rng.standard_normal(k)) * np.hanning(k)
            burst *= fric_gain * np.std(seg) / (np.std(burst) + 1e-9)
            out[a:a + k] = out[a:a + k] * np.linspace(0, 1, k) + burst
    return out

# -----------------------------------------------------------------------------
# speech

def synth_speech(text: str, speaker: dict, sr: int = AudioConfig.sample_rate, engine: str | None = None) -> np.ndarray:
    """Speak `text` with a speaker dict {"voice", "pitch", "rate"}; float32 at sr, peak 0.5.
    engine: "espeak", "procedural" or None (espeak-ng when available)."""
    engine = engine or ("espeak" if have_espeak() else "procedural")
    pitch, rate = speaker.get("pitch", 50), speaker.get("rate", 160)
    if engine == "espeak":
        if not have_espeak():
            raise RuntimeError("espeak-ng is not available (pip install espeakng-loader)")
        _, native_sr, _ = _espeak_lib()
        y = _espeak_pcm(text, speaker.get("voice", "hi"), pitch, rate).astype(np.float32) / 32768
        y = librosa.resample(y, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    elif engine == "procedural":
        female = speaker.get("sex") == "f" or "+f" in speaker.get("voice", "")
        seed = zlib.crc32(f"{text}|{speaker.get('voice')}|{pitch}|{rate}".encode())
        f0 = (200 if female else 115) * 2 ** ((pitch - 50) / 50)
        y = _vocalise(_syllables(text), f0, rate / 60 * 2.2, sr, np.random.default_rng(seed), female)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    # keep ~0.1 s of the quiet lead-in/out around the speech
    loud = np.flatnonzero(np.abs(y) > 0.01 * np.abs(y).max())
    if len(loud) == 0:
        raise RuntimeError(f"{engine} produced silence for {text[:30]!r}")
    y = y[max(0, loud[0] - sr // 10): loud[-1] + sr // 10]
    return (0.5 * y / np.abs(y).max()).astype(np.float32)

# -----------------------------------------------------------------------------
# noise families

def _coloured(n, alpha, rng):
    """Noise with power spectrum ~ 1/f^alpha (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spec[1:] *= f[1:] ** (-alpha / 2)
    spec[0] = 0
    return np.fft.irfft(spec, n)

def _slow(n, sr, hz, rng):
    """A smooth random curve (~N(0,1)) that changes about `hz` times a second."""
    knots = rng.standard_normal(int(n / sr * hz) + 3)
    x = np.arange(n) / sr * hz
    i = x.astype(int)
    w = (1 - np.cos(np.pi * (x - i))) / 2
    return knots[i] * (1 - w) + knots[i + 1] * w

def _filt(y, kind, cutoff, sr, order=4):
    cutoff = np.minimum(cutoff, 0.45 * sr)  # keep cutoffs valid at any sample rate
    return signal.sosfilt(signal.butter(order, cutoff, kind, fs=sr, output="sos"), y)

def _rms(y):
    return np.sqrt(np.mean(y ** 2)) + 1e-12

def _hum(n, sr, rng):
    t = np.arange(n) / sr
    f = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
    y = np.zeros(n)
    for k in range(1, int(min(2000, 0.45 * sr) / f) + 1):  # transformer hum: strong 2nd harmonic
        amp = rng.uniform(0.2, 1) * k ** -rng.uniform(0.6, 1.6) * (2.5 if k == 2 else 1)
        y += amp * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:  # buzz: a rectified, clipped version adds sharp harmonics
        y += rng.uniform(0.1, 0.4) * np.clip(np.abs(y) / np.abs(y).max() * 3 - 1.5, -1, 1)
    y *= 1 + 0.05 * _slow(n, sr, 0.5, rng)
    hiss = _coloured(n, 1.0, rng)
    return y + rng.uniform(0.01, 0.05) * _rms(y) * hiss / _rms(hiss)

def _fan(n, sr, rng):
    t = np.arange(n) / sr
    air = _filt(_coloured(n, rng.uniform(0.5, 1.5), rng), "lowpass", rng.uniform(300, 3000), sr, 2)
    bpf = rng.uniform(40, 180)  # blade-pass frequency, and the shaft rotation below it
    shaft = bpf / rng.integers(3, 8)
    tone = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * k * bpf * t + rng.uniform(0, 6)) for k in range(1, 5))
    y = air / _rms(air) + rng.uniform(0.2, 0.6) * tone / _rms(tone)
    y *= 1 + rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * shaft * t)
    return y + rng.uniform(0, 0.1) * np.sin(2 * np.pi * rng.uniform(300, 1200) * t)  # motor whine

def _babble(n, sr, rng):
    y = np.zeros(n)
    for _ in range(rng.integers(4, 9)):  # 4-8 talkers of random made-up syllables
        sylls, m = [], 0.0
        while m < n / sr + 1:
            sylls.append((rng.integers(0, 6), rng.random() < 0.15, rng.random() < 0.35))
            m += 1 / 5.5
        female = rng.random() < 0.5
        v = _vocalise(sylls, rng.uniform(170, 240) if female else rng.uniform(90, 140),
                      rng.uniform(4, 7), sr, rng, female, fric_gain=0.3)
        v = np.roll(np.resize(v, n), rng.integers(0, n))  # random start, wrap around
        y += rng.uniform(0.5, 1.5) * v / _rms(v)
    # compress: divide by a smoothed envelope so no single syllable stands out
    env = np.sqrt(signal.lfilter([0.002], [1, -0.998], y ** 2) + 1e-6 * np.mean(y ** 2))
    y = y / env ** rng.uniform(0.4, 0.7)
    return _filt(y, "lowpass", rng.uniform(3000, 6000), sr, 2)  # a room away

def _rain(n, sr, rng):
    bed = _filt(_coloured(n, rng.uniform(0, 0.6), rng), "bandpass", [rng.uniform(300, 800), 8000], sr, 2)
    bed *= 1 + 0.15 * _slow(n, sr, 0.3, rng)
    drops = np.zeros(n)
    for _ in range(6):  # a few droplet timbres, each a decaying resonance excited at random times
        k = np.zeros(n)
        idx = rng.integers(0, n, rng.poisson(rng.uniform(15, 100) * n / sr))
        np.add.at(k, idx, rng.lognormal(0, 0.7, len(idx)) * rng.choice([-1, 1], len(idx)))
        tk = np.arange(int(0.03 * sr)) / sr
        f = min(rng.uniform(1500, 6000), 0.45 * sr)
        kern = np.exp(-tk / rng.uniform(0.001, 0.006)) * np.sin(2 * np.pi * f * tk)
        drops += signal.fftconvolve(k, kern)[:n]
    return bed / _rms(bed) * rng.uniform(0.3, 1.0) + drops / _rms(drops)

def _wind(n, sr, rng):
    y = _coloured(n, rng.uniform(1.0, 2.0), rng)
    gust = np.exp(rng.uniform(0.4, 0.9) * _slow(n, sr, rng.uniform(0.1, 0.5), rng))
    centre = np.exp(np.log(rng.uniform(120, 300)) + 0.5 * _slow(n, sr, 0.2, rng) + 0.3 * np.log(gust))
    q, hop = rng.uniform(1, 4), 256
    howl, z = np.zeros(n), np.zeros(2)  # a resonance that moves with the gusts, frame by frame
    for a in range(0, n, hop):
        b, a_ = signal.iirpeak(min(centre[a], 0.4 * sr), q, fs=sr)
        howl[a:a + hop], z = signal.lfilter(b, a_, y[a:a + hop], zi=z)
    low = _filt(y, "lowpass", rng.uniform(300, 1000), sr, 2)
    return (low / _rms(low) + rng.uniform(0.5, 1.5) * howl / _rms(howl)) * gust

def _keyboard(n, sr, rng):
    y = _coloured(n, 1.0, rng)
    y *= 0.02 / _rms(y)  # quiet room tone under the clicks (clicks are ~0.3)
    lo, hi = sorted(rng.uniform(1500, 7000, 2))  # timbre of this keyboard
    t, L = rng.uniform(0, 0.5), int(0.03 * sr)
    tk = np.arange(L) / sr
    while t < n / sr:
        for delay, amp in ((0.0, 1.0), (rng.uniform(0.05, 0.14), rng.uniform(0.2, 0.6))):  # press, release
            a = int((t + delay) * sr)
            if a + L >= n:
                continue
            click = rng.standard_normal(L) * np.exp(-tk / rng.uniform(0.0005, 0.002))
            for f in (rng.uniform(lo, hi), rng.uniform(150, 500)):  # key ring + the desk "thock"
                ring = np.sin(2 * np.pi * min(f, 0.45 * sr) * tk) * np.exp(-tk / rng.uniform(0.002, 0.01))
                click += rng.uniform(0.2, 1) * ring
            y[a:a + L] += amp * rng.lognormal(0, 0.3) * 0.3 * click
        t += rng.uniform(0.4, 2.0) if rng.random() < 0.08 else rng.gamma(2.0, 0.07)  # pause or next key
    return y

def _engine(n, sr, rng):
    f0 = rng.uniform(25, 90) * (1 + 0.12 * _slow(n, sr, 0.15, rng))  # firing frequency, RPM drift
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = np.zeros(n)
    for k in np.arange(0.5, min(30, 0.4 * sr / f0.max()), 0.5):  # half orders from uneven cylinders
        amp = rng.uniform(0.3, 1) * k ** -rng.uniform(0.6, 1.2) * (0.3 if k % 1 else 1)
        y += amp * np.sin(k * phase + rng.uniform(0, 6))
    rumble = _filt(_coloured(n, 2.0, rng), "lowpass", 150, sr, 2)
    clatter = _filt(rng.standard_normal(n), "bandpass", [800, 3500], sr, 2) * (1 + np.cos(phase)) ** 2
    y = y / _rms(y) + rng.uniform(0.3, 1) * rumble / _rms(rumble)
    return y + rng.uniform(0.03, 0.12) * clatter / _rms(clatter)

def _siren(n, sr, rng):
    t = np.arange(n) / sr
    lo, hi = rng.uniform(500, 800), rng.uniform(1100, 1600)
    mode = rng.choice(["wail", "yelp", "hilo"])
    if mode == "wail":
        sweep = 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(2.5, 6) + rng.uniform(0, 6))
    elif mode == "yelp":
        sweep = (t / rng.uniform(0.15, 0.35) + rng.random()) % 1
    else:
        sweep = (np.sin(2 * np.pi * t / rng.uniform(1.0, 1.6) + rng.uniform(0, 6)) > 0).astype(float)
        sweep = signal.lfilter([0.01], [1, -0.99], sweep)  # soften the tone changes
    f = lo + (hi - lo) * sweep
    doppler = 1 - 0.03 * np.tanh((t - rng.uniform(0, n / sr)) * rng.uniform(0.3, 1.5))  # drives past
    phase = 2 * np.pi * np.cumsum(f * doppler) / sr
    y = sum(k ** -rng.uniform(0.8, 1.5) * np.sin(k * phase) for k in range(1, 6) if k * hi < 0.45 * sr)
    y *= np.exp(rng.uniform(0, 1) * _slow(n, sr, 0.2, rng))
    city = _filt(_coloured(n, 1.5, rng), "lowpass", 800, sr, 2)
    return y / _rms(y) + rng.uniform(0.1, 0.4) * city / _rms(city)

def _traffic(n, sr, rng):
    y = _filt(_coloured(n, rng.uniform(1.5, 2.0), rng), "lowpass", rng.uniform(300, 700), sr, 2)
    y *= rng.uniform(0.3, 0.8) / _rms(y)  # distant rumble
    t = np.arange(n) / sr
    for _ in range(rng.poisson(rng.uniform(0.2, 0.7) * n / sr) + 1):  # passing vehicles
        t0, v, d = rng.uniform(-2, n / sr + 2), rng.uniform(8, 25), rng.uniform(3, 15)
        env = 1 / (1 + ((t - t0) * v / d) ** 2)
        a, b = np.searchsorted(t, [t0 - 10 * d / v, t0 + 10 * d / v])
        if b - a < 64:
            continue
        body = _filt(_coloured(b - a, 1.5, rng), "lowpass", rng.uniform(400, 1200), sr, 2)
        tyre = _filt(rng.standard_normal(b - a), "bandpass", [800, 4000], sr, 2)
        y[a:b] += rng.uniform(1, 4) * (env[a:b] * body / _rms(body) + 0.5 * env[a:b] ** 2 * tyre / _rms(tyre))
    return y

def _hiss(n, sr, rng, alpha):
    return _coloured(n, alpha, rng) * (1 + 0.05 * _slow(n, sr, 0.5, rng))

_GENERATORS = {
    "white_hiss": lambda n, sr, rng: _hiss(n, sr, rng, rng.uniform(-0.4, 0.4)),
    "pink_hiss": lambda n, sr, rng: _hiss(n, sr, rng, rng.uniform(0.8, 1.4)),
    "hum": _hum, "babble": _babble, "rain": _rain, "wind": _wind, "keyboard": _keyboard,
    "engine": _engine, "siren": _siren, "traffic": _traffic, "fan": _fan,
}
assert set(_GENERATORS) == set(NOISE_FAMILIES)

def synth_noise(family: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of one noise family as float32, RMS ~0.1 (less if that would clip)."""
    if family not in _GENERATORS:
        raise ValueError(f"unknown noise family {family!r}; choose from {NOISE_FAMILIES}")
    n, pad = int(round(seconds * sr)), sr // 2  # the pad absorbs filter start-up transients
    y = np.nan_to_num(_GENERATORS[family](n + pad, sr, rng)[:n + pad])
    y = _filt(y, "highpass", 30, sr)[pad:]  # no sub-audio drift (brown-ish families are full of it)
    y *= 0.1 / _rms(y)
    peak = np.abs(y).max()
    if peak > 0.95:  # impulsive families (keyboard, rain) would clip at RMS 0.1
        y *= 0.95 / peak
    return y.astype(np.float32)

# -----------------------------------------------------------------------------
# the corpus

def _write_wav(path: Path, y, sr):
    tmp = path.with_name(f".{path.name}.tmp")  # hidden, not *.wav: never mistaken for a clip
    sf.write(tmp, y, sr, format="WAV", subtype="PCM_16")
    os.replace(tmp, path)

def _speakers(n, seed):
    out = []
    for i in range(n):  # the first 8 are fixed, later ones jitter pitch and rate of a base voice
        spk = dict(SPEAKERS[i % len(SPEAKERS)], id=f"demo_spk{i}")
        if i >= len(SPEAKERS):
            rng = np.random.default_rng([seed, 3, i])
            spk["pitch"] = int(np.clip(spk["pitch"] + rng.integers(-12, 13), 30, 80))
            spk["rate"] = int(np.clip(spk["rate"] + rng.integers(-20, 21), 130, 190))
        out.append(spk)
    return out

def _choose_engine(engine):
    """The speech engine to use (espeak-ng when available) and its name for the README."""
    engine = engine or ("espeak" if have_espeak() else "procedural")
    if engine == "espeak" and not have_espeak():
        raise RuntimeError("engine='espeak' but espeak-ng is not available (pip install espeakng-loader)")
    synth_name = f"espeak-ng {_espeak_lib()[2]} (espeakng-loader)" if engine == "espeak" \
        else "procedural formant synth"
    if engine != "espeak":
        log.warning("demo corpus: speech is made by the %s, not espeak-ng", synth_name)
    return engine, synth_name

def _join_sentences(clips, sr, rng):
    """Group consecutive sentences into files of 1-3 sentences (4.5-10 s target), digital silence between."""
    k = 0
    while k < len(clips):
        target, parts = rng.uniform(4.5, 10.0), [clips[k]]
        k += 1
        while k < len(clips):
            pause = np.zeros(int(rng.uniform(0.2, 0.5) * sr), np.float32)  # digital silence
            if (sum(map(len, parts)) + len(pause) + len(clips[k])) / sr > min(target, 10.0):
                break
            parts += [pause, clips[k]]
            k += 1
        yield np.concatenate(parts)

def _write_speech(out_dir, speakers, sentences_per_speaker, sr, seed, engine, progress):
    """Write speech/<spk>/*.wav; returns (number of files, seconds of speech)."""
    # each speaker reads a shuffled selection of sentences, 1-3 per file, 3-10 s each
    n_speech, speech_sec = 0, 0.0
    bar = tqdm(total=len(speakers) * sentences_per_speaker, desc=f"demo speech ({engine})", disable=not progress)
    for i, spk in enumerate(speakers):
        rng = np.random.default_rng([seed, 1, i])
        order = rng.permutation(len(DEMO_SENTENCES))
        clips = []
        for k in range(sentences_per_speaker):
            clips.append(synth_speech(DEMO_SENTENCES[order[k % len(order)]], spk, sr, engine))
            bar.update()
        (out_dir / "speech" / spk["id"]).mkdir(parents=True, exist_ok=True)
        for file_ix, y in enumerate(_join_sentences(clips, sr, rng)):
            _write_wav(out_dir / "speech" / spk["id"] / f"{spk['id']}_{file_ix:03d}.wav", y, sr)
            n_speech += 1
            speech_sec += len(y) / sr
    bar.close()
    return n_speech, speech_sec

def _write_noise(out_dir, clips_per_family, seconds, sr, seed, progress):
    """Write noise/<family>/*.wav; returns the number of files."""
    # every clip has its own generator, so clips don't depend on order or count
    n_noise = 0
    bar = tqdm(total=len(NOISE_FAMILIES) * clips_per_family, desc="demo noise", disable=not progress)
    for f, family in enumerate(NOISE_FAMILIES):
        (out_dir / "noise" / family).mkdir(parents=True, exist_ok=True)
        for c in range(clips_per_family):
            y = synth_noise(family, seconds, sr, np.random.default_rng([seed, 2, f, c]))
            _write_wav(out_dir / "noise" / family / f"{family}_{c:03d}.wav", y, sr)
            n_noise += 1
            bar.update()
    bar.close()
    return n_noise

def _readme(synth_name, speakers, sr, seed, sentences_per_speaker, noise_clips_per_family, noise_seconds, engine,
            n_speech, speech_sec, n_noise):
    """The text of DEMO_CORPUS.txt: what the corpus is, its licences, settings and contents."""
    voices = "\n".join(f"  {s['id']}: voice {s['voice']}, pitch {s['pitch']}, rate {s['rate']} wpm" for s in speakers)
    return f"""SYNTHETIC DEMO CORPUS - not real data
Built offline by demo_corpus.py so the pipeline runs without downloads. A model trained on it
learns to clean robotic TTS voices from procedural noise; expect it to do poorly on real audio.

speech/<speaker>/*.wav  Hindi sentences written for this repo, spoken by {synth_name}.
                        Speakers are stand-ins: espeak-ng Hindi voice variants at different pitch
                        and rate; 1-3 sentences per file, 0.2-0.5 s of digital silence between.
noise/<family>/*.wav    procedural noise resembling ESC-50 classes: {", ".join(NOISE_FAMILIES)}.

Licences: espeak-ng is GPL-3.0 (https://github.com/espeak-ng/espeak-ng); the espeakng-loader
wheel that bundles it states no licence. The sentences and the noise generators are part of
this repo.

Settings: sr={sr} seed={seed} n_speakers={len(speakers)} sentences_per_speaker={sentences_per_speaker}
          noise_clips_per_family={noise_clips_per_family} noise_seconds={noise_seconds} engine={engine}
{voices}
Contents: {n_speech} speech files ({speech_sec / 60:.1f} min), {n_noise} noise files \
({n_noise * noise_seconds / 60:.1f} min)

To use real data instead (e.g. Hindi read speech and ESC-50 or similar noise), put speech in
one folder per speaker and noise in one folder per category, then run
    python prepare_data.py --speech-dir path/to/speech --noise-dir path/to/noise
"""

def build_demo_corpus(out_dir, sr: int = AudioConfig.sample_rate, seed: int = 0, n_speakers: int = 8,
                      sentences_per_speaker: int = 24, noise_clips_per_family: int = 4,
                      noise_seconds: float = 12.0, progress: bool = True, engine: str | None = None) -> dict:
    """Write out_dir/speech/<spk>/*.wav, out_dir/noise/<family>/*.wav and DEMO_CORPUS.txt."""
    t_start = time.time()
    out_dir = Path(out_dir)
    (out_dir / "DEMO_CORPUS.txt").unlink(missing_ok=True)  # the "corpus complete" marker, written last
    engine, synth_name = _choose_engine(engine)
    speakers = _speakers(n_speakers, seed)
    n_speech, speech_sec = _write_speech(out_dir, speakers, sentences_per_speaker, sr, seed, engine, progress)
    n_noise = _write_noise(out_dir, noise_clips_per_family, noise_seconds, sr, seed, progress)
    summary = dict(n_speech_files=n_speech, speech_seconds=round(speech_sec, 2), n_noise_files=n_noise,
                   noise_seconds=round(n_noise * noise_seconds, 2), synthesiser=synth_name,
                   n_speakers=n_speakers, build_seconds=round(time.time() - t_start, 2))
    readme = _readme(synth_name, speakers, sr, seed, sentences_per_speaker, noise_clips_per_family, noise_seconds,
                     engine, n_speech, speech_sec, n_noise)
    tmp = out_dir / ".DEMO_CORPUS.txt.tmp"
    tmp.write_text(readme, encoding="utf-8")
    os.replace(tmp, out_dir / "DEMO_CORPUS.txt")
    return summary
