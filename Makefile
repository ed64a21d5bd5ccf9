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

.PHONY: demo test bench gpu-check build ctest clean

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

test: $(INSTALL_STAMP) ctest
	$(PY) -m pytest tests bench --benchmark-disable -q

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

# For a machine with an NVIDIA GPU whose python3 already holds torch, nvcc and the
# test tools: build in place against that torch, run the GPU tests under
# compute-sanitizer, run the benchmarks and collect the JSON in $(OUT) (default gpu-out/).
OUT ?= gpu-out
gpu-check:
	mkdir -p $(OUT)
	python3 -m pip install --no-build-isolation --no-deps -e . > $(OUT)/build.log 2>&1 || (tail -50 $(OUT)/build.log; exit 1)
	python3 -c "import fastnas, json; print(json.dumps(fastnas.build_info()))" | tee $(OUT)/build_info.json
	python3 -m pytest tests -q -k "cuda" 2>&1 | tee $(OUT)/gpu-tests.txt
	FASTNAS_FUZZ_EXAMPLES=20 compute-sanitizer --tool memcheck python3 -m pytest tests -q -x -k "cuda" > $(OUT)/memcheck.txt 2>&1; tail -5 $(OUT)/memcheck.txt
	FASTNAS_FUZZ_EXAMPLES=20 compute-sanitizer --tool racecheck python3 -m pytest tests -q -x -k "cuda" > $(OUT)/racecheck.txt 2>&1; tail -5 $(OUT)/racecheck.txt
	python3 -m pytest bench -q --benchmark-json=$(OUT)/gpu-bench.json
	python3 -m fastnas.benchmarks $(OUT)/gpu-bench.json | tee $(OUT)/gpu-ratios.txt
	python3 bench/bench_search_step.py --device cuda --batch 64 --size 32 --out $(OUT)/search-step-gpu.json > $(OUT)/search-step.log 2>&1; tail -3 $(OUT)/search-step.log

clean:
	rm -rf build cmake-build cmake-build.log fastnas/_C*.so *.egg-info
