# memlens: the README's two commands are `make demo` and `make test`.
# Each creates the virtual environment if missing, installs memlens with
# the extras it needs (building the C extension) and runs.
#
#   make test PYTHON=python3.13 VENV=.venv-3.13   another interpreter

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := pyproject.toml setup.py $(wildcard csrc/*.[ch]) \
           $(wildcard src/memlens/*.py src/memlens/*/*.py) \
           $(wildcard src/memlens/*.js src/memlens/*.css)
PYTEST_ARGS ?=

.PHONY: demo test bench docs leaks asan valgrind lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# One stamp per set of extras; reinstalled when a source changes.
$(VENV)/.installed-%: $(PY) $(SOURCES)
	$(PY) -m pip install -q ".[$*]"
	touch $@

demo: $(VENV)/.installed-demo
	$(PY) examples/demo.py

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

# Every entry point and magic called thousands of times, each in a process
# of its own: RSS, allocator blocks and gc objects stay flat. The quick
# runs are part of `make test`; this adds the runs ten times as long.
leaks: $(VENV)/.installed-test
	$(PY) -m pytest -m "leaks or not leaks" tests/test_leaks.py $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/) into site/. --strict makes
# every warning an error: a broken link, a page missing from the nav, an
# API name that no longer resolves.
docs: $(VENV)/.installed-docs
	$(PY) -m mkdocs build --strict --site-dir site

bench: $(VENV)/.installed-bench
	$(PY) bench/bench_readings.py
	$(PY) bench/bench_ipython.py
	$(PY) bench/bench_line.py
	$(PY) bench/bench_tracing.py
	$(PY) bench/bench_objects.py
	$(PY) bench/bench_pytest.py
	$(PY) bench/bench_run.py
	$(PY) bench/bench_dask.py

# AddressSanitizer + UBSan build in its own environment. The build is made
# from a fresh copy of the sources in $(ASAN_VENV)/src, never in build/:
# setuptools reuses an up-to-date _core.so it finds there, so the plain
# build would be installed instead of the sanitized one (or the reverse).
# (setup.py adds -fno-wrapv there: CPython's own -fwrapv would switch off
# UBSan's signed-overflow check.) The recipe checks that the
# installed extension links libasan and libubsan, and preloads those very
# files (libasan first, as ASan requires: CPython is not instrumented).
# PYTHONMALLOC=malloc sends every Python allocation through ASan's malloc;
# pymalloc's arenas would hide overflows of small blocks. Leak reports are
# off: the interpreter keeps memory to the end by design. ASan reports are
# written to $(ASAN_VENV)/reports, so that one from a forked child or a
# subprocess fails the run too: its abort() reads as exit status 0 to
# os.WEXITSTATUS, and pytest swallows its stderr. (UBSan's log_path is not
# honoured next to libasan; its reports go to stderr and it exits 1, which
# the tests do see.) The timeout turns a hang into a failure.
ASAN_VENV := .venv-asan
ASAN_SRC := $(ASAN_VENV)/src
ASAN_REPORTS := $(CURDIR)/$(ASAN_VENV)/reports
ASAN_TIMEOUT ?= 1200
asan:
	test -x $(ASAN_VENV)/bin/python || { $(PYTHON) -m venv $(ASAN_VENV) \
	    && $(ASAN_VENV)/bin/python -m pip install -q --upgrade pip; }
	rm -rf $(ASAN_SRC) && mkdir -p $(ASAN_SRC)
	tar -cf - --exclude='*.so' --exclude=__pycache__ --exclude='*.egg-info' \
	    pyproject.toml setup.py README.md csrc src \
	    $(wildcard LICENSE* MANIFEST.in setup.cfg) | tar -xf - -C $(ASAN_SRC)
	MEMLENS_SANITIZE=1 $(ASAN_VENV)/bin/python -m pip install -q --no-cache-dir \
	    "./$(ASAN_SRC)[test]"
	rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS)
	so=$$(cd / && $(CURDIR)/$(ASAN_VENV)/bin/python -c \
	    'import importlib.util as u; print(u.find_spec("memlens._core").origin)') \
	    || exit 1; \
	asan=$$(ldd "$$so" | awk '$$1 ~ /^libasan\.so/ { print $$3 }'); \
	ubsan=$$(ldd "$$so" | awk '$$1 ~ /^libubsan\.so/ { print $$3 }'); \
	if [ ! -f "$$asan" ] || [ ! -f "$$ubsan" ]; then \
	    echo "asan: $$so is not linked with libasan and libubsan" >&2; \
	    exit 1; \
	fi; \
	echo "asan: $$so; preloading $$asan $$ubsan"; \
	LD_PRELOAD="$$asan $$ubsan" PYTHONMALLOC=malloc MEMLENS_SANITIZED=1 \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:log_path=$(ASAN_REPORTS)/asan:log_exe_name=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    timeout -k 10 $(ASAN_TIMEOUT) \
	    $(ASAN_VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS); \
	rc=$$?; \
	for f in $(ASAN_REPORTS)/*; do \
	    [ -f "$$f" ] || continue; \
	    echo "== sanitizer report $$f"; cat "$$f"; rc=1; \
	done; \
	[ $$rc -eq 124 ] && echo "asan: timed out after $(ASAN_TIMEOUT) s" >&2; \
	exit $$rc

# memcheck on the tests marked `valgrind`. PYTHONMALLOC=malloc makes every
# Python block a malloc block that memcheck tracks. Origins of
# uninitialised values are tracked, and definite leaks are errors (CPython
# keeps its other blocks to the end). A forked child stays silent so that
# it does not write into the same XML. tools/valgrind_errors.py fails on
# any error with a frame in memlens's own code and summarises the others
# (CPython, numpy, libc), which are not failures.
VALGRIND_XML := $(VENV)/valgrind.xml
VALGRIND_TIMEOUT ?= 1800
valgrind: $(VENV)/.installed-test
	rm -f $(VALGRIND_XML)
	PYTHONMALLOC=malloc MEMLENS_SANITIZED=1 timeout -k 10 $(VALGRIND_TIMEOUT) \
	    valgrind --tool=memcheck --xml=yes --xml-file=$(VALGRIND_XML) \
	    --num-callers=30 --track-origins=yes --leak-check=full \
	    --show-leak-kinds=definite --errors-for-leak-kinds=definite \
	    --child-silent-after-fork=yes \
	    $(PY) -m pytest -p no:cacheprovider -m valgrind -q $(PYTEST_ARGS); \
	rc=$$?; \
	$(PY) tools/valgrind_errors.py $(VALGRIND_XML) || rc=1; \
	exit $$rc

lint:
	clang-format --dry-run --Werror csrc/*.c csrc/*.h
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	    --inline-suppr --suppress=missingIncludeSystem \
	    --suppress=toomanyconfigs \
	    -I csrc $$($(PYTHON) -c 'import sysconfig; print("-I" + sysconfig.get_paths()["include"])') csrc

clean:
	rm -rf build dist src/*.egg-info .venv-asan site
