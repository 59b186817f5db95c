# memlens: the README's two commands are `make demo` and `make test`.
# Each creates the virtual environment if missing, installs memlens with
# the extras it needs (building the C extension) and runs.
#
#   make test PYTHON=python3.13 VENV=.venv-3.13   another interpreter

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := pyproject.toml setup.py $(wildcard csrc/*.[ch]) \
           $(wildcard src/memlens/*.py)
PYTEST_ARGS ?=

.PHONY: demo test bench asan valgrind lint clean

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

bench: $(VENV)/.installed-bench
	$(PY) bench/bench_readings.py

# AddressSanitizer + UBSan build in its own environment. CPython is not
# instrumented, so the runtime is preloaded; PYTHONMALLOC=malloc sends
# every Python allocation through it. Leak reports are off: the
# interpreter keeps memory to the end by design.
ASAN_VENV := .venv-asan
asan:
	test -x $(ASAN_VENV)/bin/python || $(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/python -m pip install -q --upgrade pip
	MEMLENS_SANITIZE=1 $(ASAN_VENV)/bin/python -m pip install -q \
	    --force-reinstall --no-deps --no-cache-dir .
	$(ASAN_VENV)/bin/python -m pip install -q ".[test]"
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	PYTHONMALLOC=malloc MEMLENS_SANITIZED=1 \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(ASAN_VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# memcheck on the tests marked `valgrind`; fails on any error whose stack
# passes through memlens's own code.
valgrind: $(VENV)/.installed-test
	PYTHONMALLOC=malloc MEMLENS_SANITIZED=1 valgrind --tool=memcheck \
	    --xml=yes --xml-file=$(VENV)/valgrind.xml --num-callers=30 \
	    $(PY) -m pytest -p no:cacheprovider -m valgrind -q $(PYTEST_ARGS)
	$(PY) tools/valgrind_errors.py $(VENV)/valgrind.xml

lint:
	clang-format --dry-run --Werror csrc/*.c csrc/*.h
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	    --inline-suppr --suppress=missingIncludeSystem \
	    -I csrc $$($(PYTHON) -c 'import sysconfig; print("-I" + sysconfig.get_paths()["include"])') csrc

clean:
	rm -rf build dist src/*.egg-info .venv-asan
