"""The benchmark's corpus is the same on every run, and its WER ignores case and punctuation only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bench.corpus import BASE_CLIPS, SAMPLE_RATE, apply_variant, build_corpus, load_clip
from bench.wer import error_counts, normalize, word_error_rate


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.timeout(120)
def test_corpus_is_byte_identical_across_builds(tmp_path: Path) -> None:
    first = build_corpus(tmp_path / "a", long_min_s=30)
    second = build_corpus(tmp_path / "b", long_min_s=30)
    assert _digests(first.root) == _digests(second.root)

    assert len(first.short) >= 20
    assert all(1.0 < item.duration_s < 15.0 for item in first.short)
    assert {path.suffix for path in first.short_paths()} == {".wav", ".flac", ".mp3"}
    assert first.long.duration_s >= 30
    manifest = json.loads((first.root / "corpus.json").read_text())
    assert manifest["long"]["text"] == first.long.text
    assert [item["path"] for item in manifest["short"]] == [item.path for item in first.short]
    # The long recording's reference is its clips' references in order.
    texts = {clip.name: clip.text for clip in BASE_CLIPS}
    expected = " ".join(texts[name.split(".")[0]] for name in first.long.derived_from)
    assert first.long.text == expected


def test_a_different_seed_gives_a_different_backlog(tmp_path: Path) -> None:
    first = build_corpus(tmp_path / "a", long_min_s=5, seed=1)
    second = build_corpus(tmp_path / "b", long_min_s=5, seed=2)
    assert [item.path for item in first.short] != [item.path for item in second.short]


def test_variants_change_the_audio_but_keep_its_length_close() -> None:
    audio = load_clip(BASE_CLIPS[0])
    rng = np.random.default_rng(0)
    louder = apply_variant(audio, "louder-4db", rng)
    assert np.sqrt(np.mean(louder**2)) == pytest.approx(np.sqrt(np.mean(audio**2)) * 10 ** (4 / 20), rel=0.02)
    noisy = apply_variant(audio, "noise-20db", rng)
    noise = noisy - audio
    assert 10 * np.log10(np.mean(audio**2) / np.mean(noise**2)) == pytest.approx(20, abs=0.5)
    faster = apply_variant(audio, "tempo-1.06", rng)
    assert faster.shape[0] / SAMPLE_RATE == pytest.approx(audio.shape[0] / SAMPLE_RATE / 1.06, rel=0.01)
    with pytest.raises(ValueError):
        apply_variant(audio, "reverb", rng)


def test_normaliser_strips_case_and_punctuation_only() -> None:
    assert normalize("And so, my fellow Americans: ask NOT!") == "and so my fellow americans ask not"
    assert normalize("sublicense, and/or sell") == "sublicense and or sell"
    assert normalize('  the  "Software"  ') == "the software"
    assert normalize("It's 1961.") == "its 1961"  # numbers stay as written
    assert normalize("") == ""


def test_word_error_rate_counts_edits_over_reference_words() -> None:
    assert word_error_rate(["Ask not, what."], ["ask not what"]) == 0.0
    # one substitution in 4 words, one deletion in 2 words: 2 edits over 6 reference words
    assert word_error_rate(["a b c d", "e f"], ["a x c d", "e"]) == pytest.approx(2 / 6)
    assert word_error_rate(["a b"], [""]) == 1.0
    assert error_counts(["a b c"], ["a x"]) == {"sub": 1, "del": 1, "ins": 0}
    assert error_counts(["a"], ["a b"]) == {"sub": 0, "del": 0, "ins": 1}
    with pytest.raises(ValueError):
        word_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        word_error_rate(["..."], ["a"])
