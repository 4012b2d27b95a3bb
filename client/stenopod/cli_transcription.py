"""`stenopod transcribe` flags for what a job is transcribed with: language, task, vocabulary,
subtitles, speaker labels."""

from __future__ import annotations

import argparse
from typing import Any

from stenopod.cli_args import positive_float, positive_int


def add_transcription_arguments(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("transcription")
    group.add_argument("--language", help="ISO language code (default: detected)")
    group.add_argument(
        "--diarize", action="store_true", help="label who speaks when (SPEAKER_0, ...) in every format"
    )
    group.add_argument(
        "--max-speakers", type=positive_int, help="with --diarize: at most this many speakers (up to 4)"
    )
    group.add_argument(
        "--task",
        choices=["transcribe", "translate"],
        default="transcribe",
        help="translate: English text from speech in any language (multilingual Whisper models)",
    )
    group.add_argument("--prompt", help="text the model reads before every stretch of audio (names, style)")
    group.add_argument(
        "--hotwords",
        action="append",
        metavar="WORD[,WORD...]",
        help="words to spell as given, comma separated (repeatable), e.g. --hotwords ComfyUI,Kubernetes",
    )
    group.add_argument(
        "--subtitles",
        action="store_true",
        help="cut srt/vtt cues from word times to readable limits (42 characters, 2 lines, 6 s)",
    )
    group.add_argument(
        "--max-line-width", type=positive_int, help="subtitle characters per line (implies --subtitles)"
    )
    group.add_argument(
        "--max-line-count", type=positive_int, help="subtitle lines per cue (implies --subtitles)"
    )
    group.add_argument(
        "--max-cue-seconds",
        type=positive_float,
        help="seconds a subtitle cue is shown at most (implies --subtitles)",
    )


def transcription_options(args: argparse.Namespace) -> dict[str, Any]:
    """BacklogOptions' language, speaker, task, vocabulary and subtitle fields from the parsed flags."""
    hotwords = tuple(
        dict.fromkeys(
            word.strip() for value in args.hotwords or [] for word in value.split(",") if word.strip()
        )
    )
    limits = {
        "max_line_width": args.max_line_width,
        "max_line_count": args.max_line_count,
        "max_duration_s": args.max_cue_seconds,
    }
    limits = {name: value for name, value in limits.items() if value is not None}
    subtitles = limits if args.subtitles or limits else None
    return {
        "language": args.language,
        "diarize": args.diarize,
        "max_speakers": args.max_speakers,
        "task": args.task,
        "prompt": args.prompt,
        "hotwords": hotwords,
        "subtitles": subtitles,
    }
