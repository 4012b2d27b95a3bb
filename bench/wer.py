"""Word error rate with a plain normaliser, so punctuation and case are not counted as errors."""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[-/_–—]")  # "and/or", "well-known": two words, as a reader says them
_NOT_WORD = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """Lowercase, punctuation stripped, whitespace collapsed. Numbers stay as written ("3" != "three"):
    neither reference here spells one, and rewriting them would hide real differences."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _SEPARATORS.sub(" ", text)
    text = _NOT_WORD.sub("", text)
    return " ".join(text.split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: all edits over all reference words (not a mean of per-file rates)."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(normalize(ref), normalize(hyp)) for ref, hyp in zip(references, hypotheses, strict=True)]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]
    if not pairs:
        raise ValueError("no reference words to score against")
    return float(jiwer.wer([ref for ref, _ in pairs], [hyp for _, hyp in pairs]))


def error_counts(references: list[str], hypotheses: list[str]) -> dict[str, int]:
    """Substitutions, deletions and insertions: a chunking that drops speech shows as deletions."""
    import jiwer

    result = jiwer.process_words(
        [normalize(ref) for ref in references], [normalize(hyp) for hyp in hypotheses]
    )
    return {"sub": result.substitutions, "del": result.deletions, "ins": result.insertions}
