"""Temperature conversions in Python: the same functions as udfs/temperature, plus the standard
library's statistics and the SDK's batch form."""

import statistics
from typing import Optional

from eddy_udf import udf


@udf
def celsius_to_fahrenheit(c: float) -> float:
    """Converts degrees Celsius to degrees Fahrenheit."""
    return c * 9 / 5 + 32


@udf
def fahrenheit_to_celsius(f: float) -> float:
    """Converts degrees Fahrenheit to degrees Celsius."""
    return (f - 32) * 5 / 9


@udf
def median_temperature(readings: list[float]) -> Optional[float]:
    """The median of a car's temperature readings (statistics.median); null for no readings."""
    return statistics.median(readings) if len(readings) else None


@udf(batch=True)
def celsius_to_kelvin(c: float) -> float:
    """Converts degrees Celsius to kelvin, a whole column per call."""
    # Batch form: `c` is the whole column (None for nulls); return a list as long as it.
    return [None if x is None else x + 273.15 for x in c]
