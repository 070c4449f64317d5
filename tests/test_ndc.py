"""NDC normalization to 11 digits (POLICY.md, "NDC to 11 digits")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.ndc import normalize_ndc


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        # 4-4-2: a zero in front of the labeler
        ("0143-9858-10", "00143985810"),
        ("1234-5678-90", "01234567890"),
        # 5-3-2: a zero in front of the product
        ("25021-105-10", "25021010510"),
        ("63323-516-30", "63323051630"),
        # 5-4-1: a zero in front of the package
        ("60505-0773-4", "60505077304"),
        ("68516-4601-2", "68516460102"),
        # 5-4-2 and 11 plain digits: unchanged
        ("00409-6509-01", "00409650901"),
        ("00944294110", "00944294110"),
        ("00000000000", "00000000000"),
        # surrounding blanks are not part of the NDC
        ("  00409-6509-01 ", "00409650901"),
        # 10 plain digits: the padding position is ambiguous
        ("1234567890", None),
        ("0143985810", None),
        # other shapes
        ("", None),
        ("   ", None),
        ("12345678", None),
        ("123456789012", None),
        ("1234-567-89", None),  # 4-3-2
        ("1234-5678-9", None),  # 4-4-1
        ("12345-678-9", None),  # 5-3-1
        ("123456-7890-1", None),  # 6-4-1
        ("12345-67890-1", None),  # 5-5-1
        ("12345-6789-012", None),  # 5-4-3
        ("12345--6789-01", None),
        ("-12345-6789-01", None),
        ("12345-6789-01-", None),
        ("12345 6789 01", None),
        ("12345.6789.01", None),
        ("1234567890a", None),
        ("N4 00409650901", None),
        ("0040965090l", None),  # letter l, not a one
        # non-ASCII digits look like digits to str.isdigit
        ("０１２３４５６７８９０", None),
        ("٠١٢٣٤-٥٦٧٨-٩٠", None),
        ("00409\u20136509\u201301", None),  # en dashes
        (None, None),
    ],
)
def test_ndc_table(printed: str | None, expected: str | None) -> None:
    assert normalize_ndc(printed) == expected


ascii_digits = st.text(alphabet="0123456789", min_size=1, max_size=6)
shapes = st.sampled_from([(4, 4, 2), (5, 3, 2), (5, 4, 1), (5, 4, 2)])


@st.composite
def hyphenated(draw) -> tuple[str, tuple[int, int, int]]:
    shape = draw(shapes)
    parts = [draw(st.text(alphabet="0123456789", min_size=n, max_size=n)) for n in shape]
    return "-".join(parts), shape


anything = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="0123456789-", max_size=16),
    st.text(alphabet="0123456789", min_size=9, max_size=12),
    hyphenated().map(lambda x: x[0]),
)


@settings(max_examples=300)
@given(anything)
def test_output_is_eleven_ascii_digits_or_none(printed: str) -> None:
    out = normalize_ndc(printed)
    assert out is None or (len(out) == 11 and out.isascii() and out.isdigit())


@settings(max_examples=300)
@given(anything)
def test_normalization_is_idempotent(printed: str) -> None:
    out = normalize_ndc(printed)
    if out is not None:
        assert normalize_ndc(out) == out


@settings(max_examples=200)
@given(st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_ten_plain_digits_never_accepted(printed: str) -> None:
    assert normalize_ndc(printed) is None
    assert normalize_ndc(f" {printed} ") is None


@settings(max_examples=200)
@given(hyphenated())
def test_every_printed_shape_keeps_its_digits_in_order(case: tuple[str, tuple[int, int, int]]) -> None:
    printed, shape = case
    labeler, product, package = printed.split("-")
    out = normalize_ndc(printed)
    assert out == labeler.rjust(5, "0") + product.rjust(4, "0") + package.rjust(2, "0")
    assert shape in {(4, 4, 2), (5, 3, 2), (5, 4, 1), (5, 4, 2)}


@settings(max_examples=200)
@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_eleven_plain_digits_unchanged(printed: str) -> None:
    assert normalize_ndc(printed) == printed
