"""RunPod without a bucket, the way out: transcripts come back in the job's answer and the client
writes <output>/<id>.<format> itself.

The worker answers inline (no `output` in the job) with each item's text and segments; the files
are rendered from them by the worker's own renderer (stenopod.formats), so they are byte for byte
what the worker writes to a bucket. Each file is written atomically (LocalStore: a hidden part
file, then a rename) and read back before the item counts as done; the runner records the item
in its ledger only after that, so a client killed between the answer and the write asks for the
answer again (RunPod keeps it 30 minutes) instead of losing it.
"""

from __future__ import annotations

from typing import Any

from stenopod.formats import CONTENT_TYPES, TranscriptDocument, render
from stenopod.schema import ItemResult, OutputFormat, Subtitles, Timestamps
from stenopod.storage import ObjectStore, StorageError


def worker_timestamps(timestamps: str, subtitles: bool = False) -> str:
    """What to ask the worker for: the files are rendered from segments, so at least those; and
    readable subtitles are cut from words."""
    if subtitles:
        return Timestamps.word.value
    return Timestamps.segment.value if timestamps == Timestamps.none.value else timestamps


def render_result(
    result: dict[str, Any],
    formats: tuple[str, ...],
    timestamps: str,
    subtitles: dict[str, Any] | None = None,
    task: str = "transcribe",
) -> dict[str, bytes]:
    """format -> file contents for one item's inline result (StorageError if it carries no transcript).

    subtitles and task: the job's, so the files match those a worker writes to storage."""
    parsed = ItemResult.model_validate(result)
    if parsed.text is None:
        raise StorageError(f"the answer for {parsed.id} carries no transcript to write")
    document = TranscriptDocument(
        text=parsed.text,
        segments=parsed.segments or [],
        language=parsed.language,
        duration=parsed.duration_s or 0.0,
        word_timestamps=timestamps == Timestamps.word.value,
        speakers=parsed.speakers,
        task=task,
        language_probability=parsed.language_probability,
        subtitles=Subtitles(**subtitles) if subtitles is not None else None,
    )
    return {fmt: render(OutputFormat(fmt), document) for fmt in formats}


def write_inline_result(
    store: ObjectStore,
    item_id: str,
    result: dict[str, Any],
    formats: tuple[str, ...],
    timestamps: str,
    subtitles: dict[str, Any] | None = None,
    task: str = "transcribe",
) -> None:
    """Write <item_id>.<format> for every format, each read back and compared; StorageError if not."""
    for fmt, data in render_result(result, formats, timestamps, subtitles, task).items():
        key = f"{item_id}.{fmt}"
        store.put_bytes(key, data, CONTENT_TYPES[OutputFormat(fmt)])
        if store.get_bytes(key) != data:
            raise StorageError(f"{store.uri(key)} does not hold what was written")
