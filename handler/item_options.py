"""Each item's decoding options from the job input, and whether the job's model can honour them.

An item's own language, prompt and hotwords replace the job's, so two items of one job can differ;
everything else (task, timestamps, subtitles) is the job's. A model that cannot do what was asked
(a language it does not know, translation on an English-only model) refuses the job before any
audio is fetched, naming the field and the model, rather than transcribing it some other way.
"""

from __future__ import annotations

from stenopod.schema import ErrorCode, JobError, JobInput, JobItem

from .engines.base import DecodeOptions, Engine


def decode_options(job: JobInput, item: JobItem, word_timestamps: bool = False) -> DecodeOptions:
    """What the engine transcribes this item with (word_timestamps: whether the job needs word times)."""
    hotwords = item.hotwords if item.hotwords is not None else job.hotwords
    return DecodeOptions(
        language=item.language if item.language is not None else job.language,
        task=job.task.value,
        prompt=item.prompt if item.prompt is not None else job.prompt,
        hotwords=tuple(hotwords or ()),
        word_timestamps=word_timestamps,
    )


def check_options(job: JobInput, engine: Engine) -> JobError | None:
    """invalid_input naming the first field the engine cannot honour, or None."""
    items = job.job_items()
    for index, item in enumerate(items):
        problem = engine.check_options(decode_options(job, item))
        if problem is None:
            continue
        own = job.items is not None and getattr(item, problem.field, None) is not None
        field = f"input.items.{index}.{problem.field}" if own else f"input.{problem.field}"
        return JobError(code=ErrorCode.invalid_input, message=f"{field}: {problem.message}", fields=[field])
    return None
