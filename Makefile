# The two commands of the README: `make demo` and `make test`. Both create .venv,
# install requirements.txt and build fastnas into it when that has not been done.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed
INSTALL_STAMP := $(VENV)/.fastnas-installed
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h') setup.py
RESULTS := bench/results
CUDA_TOOLKIT := $(shell nvcc --dryrun -c probe.cu 2>&1 | sed -n 's/^[#][$$] TOP=//p')
HOST_TAG := $(shell hostname | tr -c 'A-Za-z0-9_.\n-' '_')

.PHONY: demo test bench gpu-check gpu-check-cpu cxx17-check build ctest clean

$(DEPS_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The editable install registers the package and the `fastnas` command; later
# source changes are rebuilt incrementally by ninja (build/ keeps the objects).
$(INSTALL_STAMP): $(DEPS_STAMP) $(CSRC)
	if [ -f $@ ]; then $(PY) setup.py --quiet build_ext --inplace; \
	else $(PY) -m pip install --no-build-isolation --no-deps -e .; fi
	touch $@

build: $(INSTALL_STAMP)

demo: $(INSTALL_STAMP)
	$(PY) -m fastnas demo

test: $(INSTALL_STAMP) ctest cxx17-check gpu-check-cpu
	$(PY) -m pytest tests bench --benchmark-disable -q

# csrc compiled at -std=c++17 (syntax only) against torch 2.11's headers, fetched from its wheel:
# torch 2.14's builds use C++20, 2.11's C++17 (tools/cxx17_check.py; SKIPPED only without network).
cxx17-check: $(DEPS_STAMP)
	$(PY) tools/cxx17_check.py --jobs 2

# The plumbing of `make gpu-check` (the same steps, tiny, on the CPU, no build and no sanitizers).
gpu-check-cpu: $(INSTALL_STAMP)
	OMP_NUM_THREADS=1 $(PY) tools/gpu_check.py --cpu --out build/gpu-check-cpu

# The same csrc built by CMake with Torch's CMake package, and its C++ tests.
ctest: $(DEPS_STAMP)
	cmake -S . -B cmake-build -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		$(if $(CUDA_TOOLKIT),-DCUDA_TOOLKIT_ROOT_DIR=$(CUDA_TOOLKIT)) > cmake-build.log 2>&1 || (tail -30 cmake-build.log; exit 1)
	cmake --build cmake-build -j2 >> cmake-build.log 2>&1 || (tail -30 cmake-build.log; exit 1)
	ctest --test-dir cmake-build --output-on-failure

bench: $(INSTALL_STAMP)
	mkdir -p $(RESULTS)
	$(PY) -m pytest bench -q --benchmark-json=$(RESULTS)/cpu-$(HOST_TAG).json
	$(PY) -m fastnas.benchmarks $(RESULTS)/cpu-$(HOST_TAG).json

# For a machine with an NVIDIA GPU whose python3 already holds torch, nvcc, compute-sanitizer and the
# test tools: build in place for its GPU, the GPU tests beside memcheck and racecheck of the op tests,
# then the benchmarks alone, all within a budget (--budget, 480 s); at most 8 files in $(OUT), exit 1
# on any failure. `python3 tools/gpu_check.py --dry-run` prints the plan. See docs/gpu-check.md.
OUT ?= build/gpu-out
gpu-check:
	python3 tools/gpu_check.py --out $(OUT)

clean:
	rm -rf build cmake-build cmake-build.log fastnas/_C*.so *.egg-info
