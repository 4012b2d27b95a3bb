"""One batched pass of Whisper over planned 30 s windows: encode, beam search, split, align.

The engine (whisper.py) decides what goes in which window and what to do with the result; this
module only runs CTranslate2 on the windows, the way faster-whisper's transcribe() runs one window,
and reports what the decoder left unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.engines.base import SAMPLE_RATE
from handler.engines.whisper_packing import WINDOW_S, Window, window_audio

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

# faster-whisper's defaults for transcribe(): a decode whose text compresses better than this is
# a repetition loop, one below this average log-probability is unreliable; either sends the
# window's audios to the sequential path, which retries at higher temperatures.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
MAX_INITIAL_TIMESTAMP_S = 1.0
TIME_PRECISION_S = 0.02  # one timestamp token
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass
class DecodedWindow:
    """One window's decode, split into segments (dicts as faster-whisper makes them).

    decoded_until_s: where the speech the decoder left out begins (window.end_s: nothing left
    out), used to tell which packed audios were not reached. seek_s: where faster-whisper's own
    loop would continue (the end of the last complete segment), or None when the window is done.
    """

    window: Window
    segments: list[dict[str, Any]]
    decoded_until_s: float
    seek_s: float | None
    reliable: bool


def _timestamp_pairs(tokens: list[int], begin: int) -> list[int]:
    """Positions of the second token of each pair of consecutive timestamps (a segment boundary)."""
    return [i for i in range(1, len(tokens)) if tokens[i] >= begin and tokens[i - 1] >= begin]


def _unfinished_from(tokens: list[int], tokenizer: Tokenizer, window: Window) -> float:
    """Where the speech the decoder left out of a window begins (window.end_s: nothing left out).

    A decode ending in two timestamps ("<|16.80|><|19.52|>" then end of text) closed its last
    segment at 16.80 and announced one at 19.52 that it did not write; one ending in text has an
    unfinished last segment from its last opening timestamp. Both are left out (faster-whisper's
    sequential loop re-reads them from a new window); everything before that time is complete.
    """
    begin = tokenizer.timestamp_begin
    pairs = _timestamp_pairs(tokens, begin)
    if not pairs:
        return window.end_s  # one segment for the whole window: faster-whisper takes it as complete
    return (tokens[pairs[-1]] - begin) * TIME_PRECISION_S


def seek_after(tokens: list[int], tokenizer: Tokenizer, single_ending: bool) -> float | None:
    """Where faster-whisper's sequential loop would read its next window from, in window time.

    A decode that ends on a lone timestamp, or that has no pair of timestamps at all, covered the
    whole window (None). Otherwise the text after the last pair is an unfinished segment: the loop
    drops it and seeks to the end of the last complete segment, the first timestamp of that pair.
    """
    if single_ending:
        return None
    begin = tokenizer.timestamp_begin
    pairs = _timestamp_pairs(tokens, begin)
    if not pairs:
        return None
    return (tokens[pairs[-1] - 1] - begin) * TIME_PRECISION_S


def window_features(model: WhisperModel, window: Window, audios: list[np.ndarray]) -> np.ndarray:
    """The window's log-mel features, 3000 frames.

    A window of several audios is padded with digital silence to 30 s BEFORE the mel transform,
    as in its gaps: with faster-whisper's padding of the features instead (zeros there are not
    silence), tiny.en took the padding for more speech and stopped before the last audio of most
    windows. A window of one audio is computed exactly as faster-whisper does, so that its decode
    is the plain loop's.
    """
    from faster_whisper.audio import pad_or_trim

    samples = window_audio(window, audios)
    if len(window.placements) == 1:
        # faster-whisper's transcribe() leaves out the last frame (its content_frames).
        return pad_or_trim(model.feature_extractor(samples)[:, :-1])
    length = int(WINDOW_S * SAMPLE_RATE)
    return pad_or_trim(model.feature_extractor(np.pad(samples, (0, max(0, length - samples.shape[0])))))


def _encode(model: WhisperModel, features: np.ndarray, one_by_one: bool) -> Any:
    """The encoder output of a batch of windows.

    On the CPU one window at a time, then stacked: measured with tiny.en on one thread, a batch of
    four windows costs 283 ms a window against 240 ms alone (the attention over 1,500 frames falls
    out of cache), while the beam search that follows gets cheaper per window the larger its batch
    (238 ms alone, 141 ms in a batch of eight). On a GPU one batched call is faster.
    """
    import ctranslate2

    if not one_by_one or features.shape[0] == 1:
        return model.encode(features)
    parts = [np.asarray(model.encode(features[position : position + 1])) for position in range(len(features))]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(parts)))


def encode_window(model: WhisperModel, window: Window, audios: list[np.ndarray]) -> np.ndarray:
    """One window's encoder output on the CPU, as a host array (1 x frames x width): windows encoded
    as their audio arrives are stacked into one beam search later (see decode_windows)."""
    return np.asarray(model.encode(window_features(model, window, audios)[np.newaxis]))


def decode_windows(
    model: WhisperModel,
    windows: list[Window],
    audios: list[np.ndarray],
    tokenizer: Tokenizer,
    *,
    beam_size: int,
    word_timestamps: bool,
    encode_one_by_one: bool,
    encoded: list[np.ndarray] | None = None,
) -> list[DecodedWindow]:
    """One encode and one batched beam search with timestamps over the windows, as faster-whisper's
    transcribe() decodes one window at temperature 0 (no previous text, suppress_blank, the same
    suppressed tokens and first-timestamp limit). encoded: the windows' encoder outputs from
    encode_window, when they were computed ahead."""
    import ctranslate2
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    if encoded is not None:
        encoder_output = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(encoded)))
    else:
        features = np.stack([window_features(model, window, audios) for window in windows])
        encoder_output = _encode(model, features, encode_one_by_one)
    prompt = model.get_prompt(tokenizer, [], without_timestamps=False)
    results = model.model.generate(
        encoder_output,
        [list(prompt) for _ in windows],
        beam_size=beam_size,
        patience=1,
        length_penalty=1,
        max_length=model.max_length,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
        max_initial_timestamp_index=int(round(MAX_INITIAL_TIMESTAMP_S / model.time_precision)),
    )
    decoded: list[DecodedWindow] = []
    frames_per_window = model.feature_extractor.nb_max_frames
    for window, result in zip(windows, results, strict=True):
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        text = tokenizer.decode([token for token in tokens if token < tokenizer.eot]).strip()
        reliable = (
            get_compression_ratio(text) <= COMPRESSION_RATIO_THRESHOLD
            and avg_logprob >= LOG_PROB_THRESHOLD
            and not (result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD)
        )
        segments, _, single_ending = model._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=tokens,
            time_offset=0.0,
            segment_size=frames_per_window,
            segment_duration=window.end_s,
            seek=0,
        )
        decoded_until = window.end_s if single_ending else _unfinished_from(tokens, tokenizer, window)
        seek = seek_after(tokens, tokenizer, single_ending)
        decoded.append(DecodedWindow(window, segments, decoded_until, seek, reliable))
    # Word times say which audio each word belongs to; a window of one audio needs them only
    # when the caller asked for them.
    if word_timestamps or any(len(window.placements) > 1 for window in windows):
        _align_words(model, decoded, tokenizer, encoder_output, frames_per_window)
    for item in decoded:
        for segment in item.segments:
            segment["text"] = tokenizer.decode(
                [token for token in segment["tokens"] if token < tokenizer.eot]
            ).strip()
    return decoded


def _align_words(
    model: WhisperModel,
    decoded: list[DecodedWindow],
    tokenizer: Tokenizer,
    encoder_output: Any,
    frames_per_window: int,
) -> None:
    """faster-whisper's cross-attention word alignment, in place, on every window of the batch."""
    batch = [item.segments for item in decoded]
    for position, segments in enumerate(batch):
        for segment in segments:
            segment["seek"] = 0
        if not segments:
            batch[position] = [{"seek": 0, "start": 0.0, "end": 0.0, "tokens": []}]
    model.add_word_timestamps(
        batch,
        tokenizer,
        encoder_output,
        [frames_per_window] * len(batch),
        PREPEND_PUNCTUATIONS,
        APPEND_PUNCTUATIONS,
        0.0,
    )
