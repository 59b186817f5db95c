"""Argument checks shared by the public API, so that every range is
refused in the same words."""


def int_in_range(name, value, low, high, kind="an int"):
    """`value`, if it is an int (not a bool) from `low` to `high`;
    otherwise TypeError or ValueError naming the argument `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, "
                         f"got {value}")
    return value
