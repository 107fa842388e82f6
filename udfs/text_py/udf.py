"""Strings, integers, booleans and nulls in Python, like udfs/text: a function that sees nulls
itself, and one that fails per row (with the standard library's `re`)."""

import re
from typing import Optional

from eddy_udf import udf

CAR_ID = re.compile(r"car-(\d+)")


@udf
def shout(text: str, times: int) -> str:
    """Shouts a car id: upper case, with `!` repeated `times` times."""
    return text.upper() + "!" * max(0, min(times, 16))


@udf
def has_label(label: Optional[str]) -> bool:
    """True when the label is present and not empty; null labels are false, not null."""
    return bool(label)


@udf
def car_number(car: str) -> int:
    """Parses a car id like `car-0042` into its number; anything else is a row error."""
    m = CAR_ID.fullmatch(car)
    if m is None:
        raise ValueError(f"not a car id: {car!r}")
    return int(m.group(1))


@udf
def flip(flag: bool) -> bool:
    """Negates a flag; null stays null."""
    return not flag
