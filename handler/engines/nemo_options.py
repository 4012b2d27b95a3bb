"""What a NeMo model can be asked for beyond plain transcription: its languages and phrase boosting.

Parakeet TDT 0.6B v3 transcribes 25 European languages and picks the language itself; it has no
prompt and does not translate. Hotwords become NeMo's GPU phrase boosting (GPU-PB): a boosting tree
built from the phrases rescales the greedy TDT decoder's token scores, no retraining needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from handler.engines.base import DecodeOptions, OptionProblem

# Parakeet TDT 0.6B v3's languages (its model card); v2 and other "-en" models know English only.
PARAKEET_V3_LANGUAGES = tuple(
    "bg cs da de el en es et fi fr hr hu it lt lv mt nl pl pt ro ru sk sl sv uk".split()
)
# How strongly the boosting tree's score is added to the model's (NeMo's shallow-fusion weight).
BOOST_ALPHA = 1.0


def nemo_languages(model_id: str) -> tuple[str, ...]:
    """The languages a Parakeet model id stands for: English for v2 and English-only ids."""
    lowered = model_id.lower()
    if "-v2" in lowered or lowered.endswith((".en", "-en")):
        return ("en",)
    return PARAKEET_V3_LANGUAGES


def nemo_options_problem(model_id: str, options: DecodeOptions) -> OptionProblem | None:
    """Why a NeMo model cannot honour the options (a language it does not know, a prompt, translation)."""
    languages = nemo_languages(model_id)
    if options.language is not None and options.language not in languages:
        return OptionProblem(
            "language",
            f"model {model_id!r} does not know language {options.language!r}; it knows: {', '.join(languages)}",
        )
    if options.task != "transcribe":
        return OptionProblem(
            "task",
            f"model {model_id!r} cannot translate; use a multilingual Whisper model for task 'translate'",
        )
    if options.prompt:
        return OptionProblem(
            "prompt", f"model {model_id!r} takes no prompt; give the words it should spell as 'hotwords'"
        )
    return None


@contextlib.contextmanager
def phrase_boosting(model: Any, hotwords: tuple[str, ...], device: str) -> Iterator[None]:
    """Decode with a boosting tree built from hotwords inside the block; plain decoding after it.

    The tree is built per call (milliseconds for a few phrases), so one audio's hotwords never
    reach another's transcript."""
    if not hotwords:
        yield
        return
    from omegaconf import OmegaConf, open_dict

    plain = OmegaConf.create(OmegaConf.to_container(model.cfg.decoding, resolve=True))
    boosted = OmegaConf.create(OmegaConf.to_container(plain, resolve=True))
    with open_dict(boosted):
        boosted.greedy.boosting_tree = {
            "key_phrases_list": list(hotwords),
            # Triton kernels exist only on a GPU; NeMo falls back to PyTorch otherwise.
            "use_triton": device == "cuda",
        }
        boosted.greedy.boosting_tree_alpha = BOOST_ALPHA
    model.change_decoding_strategy(boosted, verbose=False)
    try:
        yield
    finally:
        model.change_decoding_strategy(plain, verbose=False)
