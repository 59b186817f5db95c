"""Number formatting shared by every report."""

MIB = 1024 * 1024


def mib(nbytes, precision=2):
    """Bytes as MiB with `precision` decimals, never printed as -0.00."""
    text = f"{nbytes / MIB:.{precision}f}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return text
