"""The benchmark corpus, built deterministically from the real speech in tests/data.

Six real recordings with known transcripts give ten base clips (jfk split at its pause, the two
channels of stereo_diarization, the English half of multilingual.mp3 cut at four pauses, ...).
From them:
  * a short-file backlog: every base clip plus two seeded variants of it (gain, light noise at a
    fixed SNR, small tempo change by resampling), written as wav/flac/mp3 files;
  * a long-form recording of 10+ minutes: base clips and variants in a seeded order with natural
    pauses (0.3-1.5 s) between them, over a faint noise floor, written as one flac file.
Each file has its reference transcript in corpus.json beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from handler.engines.base import SAMPLE_RATE

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
DEFAULT_WORK_DIR = Path(__file__).resolve().parent / "work"
SEED = 20240501

_MIT_1 = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software "
    "and associated documentation files, to deal in the Software without restriction, including "
    "without limitation the rights to use,"
)
_MIT_2 = (
    "copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and "
    "to permit persons to whom the Software is furnished to do so,"
)


@dataclass(frozen=True)
class BaseClip:
    """A span of one real recording and what is said in it."""

    name: str
    source: str
    channel: int | None  # None: the mono downmix; 0/1: left/right of a stereo file
    start_s: float
    end_s: float | None
    text: str


# Cut points sit in pauses found with Silero VAD; each clip's text was checked by running tiny.en
# on the clip alone (see docs/performance.md, "Corpus").
BASE_CLIPS: tuple[BaseClip, ...] = (
    BaseClip("jfk-a", "jfk.flac", None, 0.0, 7.9,
             "And so my fellow Americans, ask not what your country can do for you,"),
    BaseClip("jfk-b", "jfk.flac", None, 7.9, None, "ask what you can do for your country."),
    BaseClip("libri-1089", "librispeech_1089-134686-0001.wav", None, 0.0, None,
             "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM"),
    BaseClip("wizard", "stereo_diarization.wav", 0, 0.0, None,
             "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."),
    BaseClip("horizon", "stereo_diarization.wav", 1, 0.0, 3.2, "The horizon seems extremely distant."),
    BaseClip("comfyui", "hotwords.mp3", None, 0.0, None,
             "Then you go into your ComfyUI folder again in the ComfyUI"),
    BaseClip("mit-1", "multilingual.mp3", None, 0.0, 11.32, _MIT_1),
    BaseClip("mit-2", "multilingual.mp3", None, 11.32, 21.09, _MIT_2),
    BaseClip("mit-3", "multilingual.mp3", None, 21.09, 25.7,
             "subject to the following conditions: The above copyright notice and this permission notice"),
    BaseClip("mit-4", "multilingual.mp3", None, 25.7, 30.0,
             "shall be included in all copies or substantial portions of the Software."),
)  # fmt: skip

REAL_RECORDINGS = sorted({clip.source for clip in BASE_CLIPS})
# name -> (kind, amount): gain in dB, noise as SNR in dB, tempo as a speed factor.
VARIANTS: dict[str, tuple[str, float]] = {
    "quieter-6db": ("gain", -6.0),
    "louder-4db": ("gain", 4.0),
    "noise-20db": ("noise", 20.0),
    "tempo-0.94": ("tempo", 0.94),
    "tempo-1.06": ("tempo", 1.06),
}
SHORT_FORMATS = ("wav", "flac", "mp3")


@dataclass(frozen=True)
class CorpusFile:
    path: str  # relative to the corpus folder
    text: str
    duration_s: float
    derived_from: list[str]


@dataclass(frozen=True)
class Corpus:
    root: Path
    short: list[CorpusFile]
    long: CorpusFile

    def short_paths(self) -> list[Path]:
        return [self.root / item.path for item in self.short]

    @property
    def long_path(self) -> Path:
        return self.root / self.long.path


def load_clip(clip: BaseClip) -> np.ndarray:
    from faster_whisper import decode_audio

    decoded = decode_audio(
        str(DATA_DIR / clip.source), sampling_rate=SAMPLE_RATE, split_stereo=clip.channel is not None
    )
    audio = decoded[clip.channel] if clip.channel is not None else decoded
    end = len(audio) if clip.end_s is None else int(clip.end_s * SAMPLE_RATE)
    return np.asarray(audio[int(clip.start_s * SAMPLE_RATE) : end], dtype=np.float32)


def apply_variant(audio: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """A plausible re-recording of the same speech: louder/quieter, noisier, a little faster/slower."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    kind, amount = VARIANTS[variant]
    if kind == "gain":
        out = audio * np.float32(10 ** (amount / 20))
    elif kind == "noise":
        snr_db = amount
        noise = rng.standard_normal(audio.shape[0]).astype(np.float32)
        scale = np.sqrt(np.mean(audio**2) / (10 ** (snr_db / 10)) / np.mean(noise**2))
        out = audio + noise * np.float32(scale)
    elif kind == "tempo":
        # Resampling: speech rate and pitch change together, as on a tape played a little off speed.
        positions = np.arange(0, audio.shape[0] - 1, amount)
        out = np.interp(positions, np.arange(audio.shape[0]), audio).astype(np.float32)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_audio(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Encode mono float32 audio with PyAV; the container follows the suffix (.wav, .flac, .mp3)."""
    import av

    codec = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame"}[path.suffix]
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        # bitexact: no encoder version or timestamps in the file, so builds are byte-identical.
        container.metadata.clear()
        stream = container.add_stream(codec, rate=rate, layout="mono")
        stream.codec_context.flags |= 0x00800000  # AV_CODEC_FLAG_BITEXACT
        if codec == "libmp3lame":
            stream.bit_rate = 64_000
        frame_size = 1152 if codec == "libmp3lame" else 4096
        for begin in range(0, pcm.shape[0], frame_size):
            block = pcm[begin : begin + frame_size]
            frame = av.AudioFrame.from_ndarray(block[np.newaxis, :], format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = begin
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _spoken(clips: list[tuple[str, np.ndarray, str]]) -> None:
    for name, audio, _ in clips:
        if audio.size < SAMPLE_RATE:
            raise ValueError(f"clip {name} is shorter than a second: a cut point is wrong")


def build_corpus(work_dir: Path = DEFAULT_WORK_DIR, *, long_min_s: float = 600.0, seed: int = SEED) -> Corpus:
    """Write the backlog and the long recording under work_dir/corpus and return their manifest."""
    rng = np.random.default_rng(seed)
    root = work_dir / "corpus"
    base = [(clip.name, load_clip(clip), clip.text) for clip in BASE_CLIPS]
    _spoken(base)

    # The backlog: each base clip as recorded, plus two distinct seeded variants of it.
    pool: list[tuple[str, np.ndarray, str]] = []
    for name, audio, text in base:
        pool.append((name, audio, text))
        for variant in rng.choice(sorted(VARIANTS), size=2, replace=False):
            pool.append((f"{name}.{variant}", apply_variant(audio, str(variant), rng), text))
    short: list[CorpusFile] = []
    for index, (name, audio, text) in enumerate(pool):
        relative = f"short/{index:02d}-{name}.{SHORT_FORMATS[index % len(SHORT_FORMATS)]}"
        write_audio(root / relative, audio)
        short.append(CorpusFile(relative, text, round(audio.shape[0] / SAMPLE_RATE, 3), [name]))

    # The long recording: clips from the pool in a seeded order, each used again only once all
    # have been, with 0.3-1.5 s pauses, until it is long_min_s long.
    pieces: list[np.ndarray] = []
    texts: list[str] = []
    names: list[str] = []
    total = 0
    while total < long_min_s * SAMPLE_RATE:
        for index in rng.permutation(len(pool)):
            name, audio, text = pool[int(index)]
            pause = np.zeros(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE), dtype=np.float32)
            pieces.extend([audio, pause])
            texts.append(text)
            names.append(name)
            total += audio.shape[0] + pause.shape[0]
            if total >= long_min_s * SAMPLE_RATE:
                break
    long_audio = np.concatenate(pieces)
    # A faint room-noise floor (about -60 dBFS), so pauses are quiet rather than digital zero.
    long_audio = long_audio + rng.standard_normal(long_audio.shape[0]).astype(np.float32) * np.float32(0.001)
    long_file = CorpusFile(
        "long/long-form.flac", " ".join(texts), round(long_audio.shape[0] / SAMPLE_RATE, 3), names
    )
    write_audio(root / long_file.path, long_audio)

    corpus = Corpus(root=root, short=short, long=long_file)
    manifest = {
        "seed": seed,
        "real_recordings": REAL_RECORDINGS,
        "base_clips": [asdict(clip) for clip in BASE_CLIPS],
        "short": [asdict(item) for item in short],
        "long": asdict(long_file),
    }
    (root / "corpus.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return corpus
