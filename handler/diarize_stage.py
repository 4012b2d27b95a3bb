"""A job's diarization stage: the diarizer over a batch of transcribed items, their words labelled.

Runs after the engine call of a batch, on the same audio, in one batched diarizer call (the
diarizer splits it by its own limits): the GPU sees diarization as it sees transcription, in
batches across items. Each item's transcript comes back with a speaker on every segment and
word, and its speakers' labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from stenopod.schema import ErrorCode, ItemError

from handler.engines.base import SAMPLE_RATE, Transcript
from handler.engines.registry import Diarizer, DiarizerUnavailable
from handler.speaker_assign import assign_speakers
from handler.speaker_turns import speaker_turns


class HasDiarizer(Protocol):
    """What the stage needs of handler.engines.registry.EngineRegistry."""

    def diarizer(self) -> Diarizer: ...


@dataclass
class Labelled:
    """One item's transcript with speakers, and their labels in order of first words."""

    transcript: Transcript
    speakers: list[str]


def find_diarizer(registry: HasDiarizer) -> Diarizer | ItemError:
    """The worker's diarizer (loaded on first use), or the model_unavailable error every item of
    the job gets: a job asking for speakers never gets a transcript silently without them."""
    try:
        return registry.diarizer()
    except DiarizerUnavailable as error:
        return ItemError(code=ErrorCode.model_unavailable, message=str(error))


def label_speakers(
    diarizer: Diarizer, audios: list[np.ndarray], transcripts: list[Transcript], max_speakers: int | None
) -> list[Labelled]:
    """Diarize audios in one batched call and assign each transcript's words to its speakers.

    A transcript with no segments (silence) is not diarized: it has no speakers.
    """
    if len(audios) != len(transcripts):
        raise ValueError(f"{len(audios)} audios for {len(transcripts)} transcripts")
    spoken = [index for index, transcript in enumerate(transcripts) if transcript.segments]
    activities = diarizer.activity([audios[index] for index in spoken]) if spoken else []
    labelled = [Labelled(transcript, []) for transcript in transcripts]
    for index, activity in zip(spoken, activities, strict=True):
        duration = audios[index].size / SAMPLE_RATE
        turns = speaker_turns(activity.probabilities, activity.frame_s, duration, max_speakers)
        labelled[index] = Labelled(*assign_speakers(transcripts[index], turns))
    return labelled
