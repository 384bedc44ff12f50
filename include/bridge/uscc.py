"""Unified social credit code (统一社会信用代码, GB 32100-2015): the legal identity of a Chinese company.

18 characters: registration authority (1), organisation type (1), administrative division (6),
organisation code (9), check character (1). The check character makes typos detectable, so both the
ERP's import job and master-data matching reject or down-rank codes that fail it.
"""

import unicodedata

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, Z, S, V
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def check_char(first17: str) -> str:
    total = sum(ALPHABET.index(c) * w for c, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def normalize_uscc(code: str | None) -> str:
    """The code as the registry writes it: full-width characters (a Chinese input method) folded, upper case,
    no surrounding spaces."""
    return unicodedata.normalize("NFKC", code or "").strip().upper()


def is_valid_uscc(code: str | None) -> bool:
    code = normalize_uscc(code)
    if len(code) != 18:
        return False
    if any(c not in ALPHABET for c in code):
        return False
    return check_char(code[:17]) == code[17]
