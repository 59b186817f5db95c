"""Native tracing on a pandas ETL (examples/native_pandas.py): read_csv's
parser buffers and the Arrow string data are seen, on the lines of the
script that caused them, and the peak's rows explain the RSS rise."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import figures

EXAMPLE = (Path(__file__).resolve().parent.parent / "examples"
           / "native_pandas.py")

pytestmark = [pytest.mark.slow, figures]


def line_of(text):
    """1-based number of the example's line that is `text`, stripped."""
    for number, line in enumerate(EXAMPLE.read_text().splitlines(), 1):
        if line.strip() == text:
            return number
    raise AssertionError(f"no line {text!r} in {EXAMPLE}")


@pytest.fixture(scope="module")
def etl():
    """The example's figures, from a fresh interpreter: what the process
    held before (and glibc's reuse of it) cannot move them."""
    done = subprocess.run([sys.executable, str(EXAMPLE), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def pandas_major():
    """Read from its metadata: importing pandas here would start Arrow's
    threads in the test process, and forks in later tests would warn."""
    from importlib.metadata import version

    return int(version("pandas").split(".")[0])


@pytest.mark.skipif(
    pandas_major() < 3,
    reason="the ETL measured is pandas 3's (Python 3.11 on): pandas 2 "
           "keeps text as Python objects, whose freed pools stay in RSS")
def test_the_peak_explains_nine_tenths_of_the_rss_rise(etl):
    # read_csv and the Arrow strings add tens of MiB, nearly all native.
    assert etl["rss_rise"] > 40 * 2**20, etl
    assert etl["explained"] >= 0.9, etl
    assert (etl["resident"] + etl["overhead"] + etl["untracked"]
            == etl["rss_rise"])


def test_the_top_lines_are_read_csv_and_the_string_building(etl):
    top = [row["lineno"] for row in etl["lines"][:3]]
    read = line_of("frame = pd.read_csv(path)")
    strings = line_of('text = frame["city"].str.cat([frame["sku"], '
                      'frame["note"]], sep="/")')
    assert read in top and strings in top, etl["lines"]
    by_line = {row["lineno"]: row for row in etl["lines"]}
    assert by_line[read]["resident"] > 2**20, by_line[read]
    # pandas' C code takes memory straight from malloc (the parser's
    # buffers from pandas 3 on, groupby's before), which tracing without
    # native=True does not see at all.
    assert sum(row["native"] for row in etl["lines"]) > 2**20, etl["lines"]
