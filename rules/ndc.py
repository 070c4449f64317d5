"""NDC normalization to the 11-digit 5-4-2 billing form (policy: leading zeroes must be used)."""

from __future__ import annotations

import re

_HYPHENATED = re.compile(r"(\d{4,5})-(\d{3,4})-(\d{1,2})")


def normalize_ndc(printed: str | None) -> str | None:
    """The 11-digit NDC without hyphens, or None when `printed` is malformed.

    4-4-2, 5-3-2 and 5-4-1 get the zero where it belongs; 5-4-2 and 11 plain digits are
    unchanged. 10 plain digits are malformed: the padding position is ambiguous.
    """
    if printed is None:
        return None
    text = printed.strip()
    if len(text) == 11 and text.isdigit() and text.isascii():
        return text
    m = _HYPHENATED.fullmatch(text)
    if m is None or not text.isascii():
        return None
    labeler, product, package = m.groups()
    shape = (len(labeler), len(product), len(package))
    if shape == (5, 4, 2):
        return labeler + product + package
    if shape == (4, 4, 2):
        return "0" + labeler + product + package
    if shape == (5, 3, 2):
        return labeler + "0" + product + package
    if shape == (5, 4, 1):
        return labeler + product + "0" + package
    return None
