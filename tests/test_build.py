"""A broken C build must fail the install, never leave a pure-Python one."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_failed_c_build_is_an_install_error(tmp_path):
    if not (ROOT / "setup.py").exists():
        pytest.skip("not run from a source checkout")
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for name in ("csrc", "src"):
        shutil.copytree(ROOT / name, tree / name,
                        ignore=shutil.ignore_patterns("*.so", "__pycache__",
                                                      "*.egg-info"))
    env = dict(os.environ, CFLAGS="-DMEMLENS_FORCE_BUILD_ERROR")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(tree)],
        capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "MEMLENS_FORCE_BUILD_ERROR" in result.stdout + result.stderr
    assert not list((tmp_path / "wheels").glob("*.whl")) if (
        tmp_path / "wheels").exists() else True


def test_no_source_folder_shadows_the_extension():
    # A folder named like the extension would import as an empty namespace
    # package when the build is missing, and hide the failure.
    assert not (ROOT / "src" / "memlens" / "_core").exists()


def test_free_threaded_build_is_refused_in_one_line(tmp_path):
    # No free-threaded interpreter is at hand: the build script is run as
    # on one, with sysconfig saying Py_GIL_DISABLED.
    if not (ROOT / "setup.py").exists():
        pytest.skip("not run from a source checkout")
    probe = (
        "import runpy, sys, sysconfig\n"
        "real = sysconfig.get_config_var\n"
        "sysconfig.get_config_var = lambda name: (\n"
        "    1 if name == 'Py_GIL_DISABLED' else real(name))\n"
        "sys.argv = ['setup.py', '--name']\n"
        "runpy.run_path('setup.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "memlens: free-threaded CPython (Py_GIL_DISABLED) is not supported "
        "yet; use the default build of this Python"]
