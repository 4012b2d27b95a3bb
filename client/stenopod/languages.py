"""The language codes a transcription model can be asked for: Whisper's (a superset of Parakeet's).

Checked by the client, so `--language xx` is a usage error at once rather than a backlog of items
that the worker transcribes in the wrong language or fails one by one.
"""

from __future__ import annotations

LANGUAGE_CODES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi "
    "hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn "
    "no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi "
    "yi yo yue zh".split()
)


def is_language_code(code: str) -> bool:
    return code.strip().lower() in LANGUAGE_CODES
