"""Units, number formats and HTML tables: the one place every report takes
them from (measure, the line tables, snapshots, the census, the command
line, the magics and the pytest plugin).

The pytest plugin imports this module at start-up, so it imports nothing
at module level; ``html`` is imported where a table is built.
"""

KIB = 2**10
MIB = 2**20


def mib(nbytes, precision=2, width=0):
    """Bytes as MiB with `precision` decimals, right-aligned in `width`
    characters; never printed as -0.00: the sign of a figure that rounds to
    zero becomes a blank inside a width, and goes where there is none."""
    text = f"{nbytes / MIB:{width}.{precision}f}"
    if "-" in text and float(text) == 0:
        text = text.replace("-", " " if width else "")
    return text


def kib(nbytes, precision=1):
    """Bytes as KiB with `precision` decimals, the sign kept (a snapshot
    comparison's -0.0 says that a line shrank)."""
    return f"{nbytes / KIB:.{precision}f}"


class Markup(str):
    """Text that is HTML already: a table cell that is not escaped again."""

    __slots__ = ()


def html_row(cells, tag="td"):
    """One ``<tr>`` of `cells`, each in a `tag` element and escaped unless
    it is Markup."""
    import html

    return "<tr>" + "".join(
        f"<{tag}>{c if isinstance(c, Markup) else html.escape(str(c))}"
        f"</{tag}>" for c in cells) + "</tr>"


def html_table(header, rows):
    """The table of every ``_repr_html_``: `header` cells and `rows` (lists
    of cells), escaped as html_row escapes them."""
    return ("<table class='memlens'><thead>" + html_row(header, "th")
            + "</thead><tbody>" + "".join(html_row(row) for row in rows)
            + "</tbody></table>")


def human(nbytes):
    """Bytes in the unit that reads best: ``B`` under a KiB, ``KiB`` with
    one decimal under a MiB, ``MiB`` with two decimals above; the flame
    graph page's script writes its figures the same way (_flamegraph.js,
    ``human``)."""
    if abs(nbytes) < KIB:
        return f"{nbytes} B"
    if abs(nbytes) < MIB:
        return f"{kib(nbytes)} KiB"
    return f"{mib(nbytes)} MiB"
