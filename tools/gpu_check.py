"""`make gpu-check OUT=...`: everything a lent GPU machine should run, in one call that fits its time.

A lent machine has 15 minutes of device time in all, so one call must do it: build in place against the
machine's torch (the architectures of its GPU), check that the build holds code for that GPU, run the
GPU tests and, at the same time, the op tests under compute-sanitizer (memcheck with the caching
allocator off, so that it sees every allocation's bounds; racecheck on fastnas's kernels only), then,
alone on the GPU so the timings mean something, the op benchmarks, the search-step comparison (time,
peak memory and kernel launches against the reference style), the batched NB201 scoring and the
torch.compile op benchmarks.

Every step runs under a time cap, and all of them under one budget (default 480 s): a step that cannot
start in time is "not-run", which fails the check like a failed step. Each step's exit status is its
command's own (no pipes), compute-sanitizer returns 1 on any error it finds, and the whole check exits
1 when any step did not pass. Everything lands in OUT, in at most 8 files (what the device tool returns):

    gpu-check.json      summary: machine and build facts, every step's command, status and seconds
    steps.log           output of the steps run one at a time (build, facts, benchmarks)
    tests.log           the GPU tests
    sanitizers.log      memcheck, then racecheck
    ops.json            op benchmarks, fused and eager (pytest-benchmark JSON)
    ops-compiled.json   the torch.compile op benchmarks
    search-step.json    bench/bench_search_step.py
    nb201-scoring.json  the batched NB201 scoring bench (bench/bench_nb201_scoring.py)

--cpu runs the same steps on the CPU, at tiny sizes and without the build and the sanitizers, so CI
tests the plumbing (its timings are not measurements); --dry-run prints the plan and runs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from cxx17_check import load_setup_py  # noqa: E402

MAX_FILES = 8  # the device tool brings back at most 8 files from $OUT
SUMMARY = "gpu-check.json"
# Ops whose tests live in another op's file (tests/test_<op>.py otherwise).
TESTED_WITH = {"gram_distance": "pair_distance"}


def op_test_files() -> list[str]:
    """The test file of every op of csrc/registration.cpp (the schema): what the sanitizers check."""
    schema = (ROOT / "csrc" / "registration.cpp").read_text()
    ops = [name for name in re.findall(r'm\.def\("(\w+)\(', schema) if not name.endswith("_backward")]
    return list(dict.fromkeys(f"tests/test_{TESTED_WITH.get(name, name)}.py" for name in ops))


# Issue 16's bench: its step is skipped (not failed) where the file is not there.
NB201_SCORING_BENCH = "bench/bench_nb201_scoring.py"
MIN_STEP_S = 10  # a step is not started with less of the budget left


@dataclasses.dataclass
class Step:
    name: str
    command: list[str]
    log: str  # file under OUT the output is appended to
    cap_s: float
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    output: str | None = None  # a file under OUT the step must write
    needs: str | None = None  # a repository file without which the step is skipped (not a failure)
    gate: bool = False  # when it does not pass, nothing after it runs
    facts: bool = False  # its last stdout line is JSON for the summary


def find_compute_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    home = load_setup_py().find_cuda_home()
    candidates = [Path(home) / "bin" / "compute-sanitizer"] if home else []
    candidates += [Path("/usr/local/cuda/bin/compute-sanitizer")]
    return next((str(c) for c in candidates if c.is_file()), None)


def plan(cpu: bool, out: Path, python: str = sys.executable,
         sanitizer: str | None = None) -> list[list[list[Step]]]:
    """The phases, each a list of lanes run side by side, each lane a list of steps run in order."""
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    device = "cpu" if cpu else "cuda"
    # The build in place (no install into the machine's Python): the steps import fastnas through PYTHONPATH.
    build = [] if cpu else [[[Step("build", [python, "setup.py", "build_ext", "--inplace"], "steps.log", 300,
                                   env={"MAX_JOBS": str(os.cpu_count() or 1)}, gate=True)]]]
    facts = [[[Step("build-facts", [python, str(ROOT / "tools" / "gpu_check.py"), "--facts", device], "steps.log",
                    60, gate=True, facts=True)]]]
    # The three checks run side by side: a third of the cores each for their CPU work (fastnas's choice).
    threads = {} if cpu else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 3) // 3))}
    # fastnas's choice: fewer fuzz examples than the default 200, 10 under the sanitizers (10-100x slower).
    tests = Step("gpu-tests", pytest + ["tests", "bench/bench_search_step.py", "-k", "cuda"], "tests.log", 240,
                 env={"FASTNAS_FUZZ_EXAMPLES": "50", **threads})
    op_tests = op_test_files()
    if cpu:
        sanitizers = [Step(f"{tool}-plain", pytest + op_tests + ["-k", "cuda"], "sanitizers.log", 240)
                      for tool in ("memcheck", "racecheck")]
    else:
        wrap = [sanitizer or "compute-sanitizer", "--error-exitcode=1", "--report-api-errors", "no"]
        sanitizers = [
            Step("memcheck", wrap + ["--tool", "memcheck", *pytest, *op_tests, "-k", "cuda"], "sanitizers.log",
                 240, env={"FASTNAS_FUZZ_EXAMPLES": "10", "PYTORCH_NO_CUDA_MEMORY_CACHING": "1", **threads}),
            # Only fastnas's kernels (their names hold the namespace): torch's own are not ours to check.
            Step("racecheck", wrap + ["--tool", "racecheck", "--kernel-name", "kns=fastnas", *pytest, *op_tests,
                                      "-k", "cuda"], "sanitizers.log", 240,
                 env={"FASTNAS_FUZZ_EXAMPLES": "10", **threads})]
    # CPU: two tiny cases timed once (plumbing only); GPU: every CUDA case, 0.25 s each (fastnas's choice).
    timing = (["--benchmark-min-rounds=1", "--benchmark-max-time=0.000001", "--benchmark-warmup=off"] if cpu
              else ["--benchmark-max-time=0.25"])
    selection = "cpu and foreach_reduce and abs" if cpu else "cuda"
    ops = Step("op-bench", pytest + ["bench/test_ops.py", "-k", f"{selection} and not compiled", *timing,
                                     f"--benchmark-json={out / 'ops.json'}"], "steps.log", 120, output="ops.json")
    search = Step("search-step", [python, "bench/bench_search_step.py", "--device", device,
                                  "--out", str(out / "search-step.json")]
                  + (["--methods", "darts", "--variants", "eager,fused", "--C", "4", "--layers", "3", "--batch", "2",
                      "--size", "8", "--steps", "1"] if cpu else ["--batch", "64", "--size", "32"]),
                  "steps.log", 120, output="search-step.json")
    # On the GPU at the bench's own sizes (64 cells data-free, 16 per data proxy), then all 15,625 cells timed
    # (issue 16's GPU target: 1 minute); the bench writes its JSON after every case, so a step cut by its cap
    # still brings back the ratios. --quick is its plumbing run.
    nb201 = Step("nb201-scoring", [python, NB201_SCORING_BENCH, "--device", device,
                                   "--out", str(out / "nb201-scoring.json")]
                 + (["--quick"] if cpu else ["--all-cells"]),
                 "steps.log", 150, output="nb201-scoring.json", needs=NB201_SCORING_BENCH)
    benches = [ops, search, nb201]
    if not cpu:  # on a CPU, Inductor compiles C++ for minutes: not a plumbing check
        benches.append(Step("op-bench-compiled", pytest + ["bench/test_ops.py", "-k", f"{selection} and compiled",
                                                           *timing, f"--benchmark-json={out / 'ops-compiled.json'}"],
                            "steps.log", 150, output="ops-compiled.json"))
    return build + facts + [[[tests], sanitizers], [benches]]


def facts(device: str) -> dict:
    """Build and machine facts; with device cuda, also whether the build holds code for every visible GPU."""
    import torch

    import fastnas
    from fastnas.ops import has_kernel

    info = {"build": fastnas.build_info(), "python": sys.version.split()[0], "cpus": os.cpu_count(), "gpus": []}
    for index in range(torch.cuda.device_count() if device == "cuda" else 0):
        props = torch.cuda.get_device_properties(index)
        info["gpus"].append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                             "memory_bytes": props.total_memory,
                             "has_kernel": has_kernel(torch.device("cuda", index))})
    for tool, flag in [("nvidia-smi", "--version"), ("compute-sanitizer", "--version"), ("nvcc", "--version")]:
        found = find_compute_sanitizer() if tool == "compute-sanitizer" else shutil.which(tool)
        if found:
            done = subprocess.run([found, flag], capture_output=True, text=True)
            info[tool] = " | ".join(line.strip() for line in done.stdout.splitlines() if line.strip())[-300:]
    return info


def facts_problem(info: dict, device: str) -> str | None:
    if device != "cuda":
        return None
    if not info["build"]["with_cuda"]:
        return "the build has no CUDA kernels"
    if not info["gpus"]:
        return "no GPU is visible to torch"
    missing = [gpu["name"] for gpu in info["gpus"] if not gpu["has_kernel"]]
    return f"the build holds no code for {missing}" if missing else None


@dataclasses.dataclass
class Outcome:
    status: str  # passed, failed, timeout, skipped (its file is not there), not-run (budget or a failed gate)
    seconds: float = 0.0
    returncode: int | None = None
    note: str = ""
    facts: dict | None = None


class Runner:
    """Runs the plan's phases under one deadline; every step's output is appended to its log under OUT."""

    def __init__(self, out: Path, budget_s: float, env: dict[str, str]):
        self.out, self.env = out, env
        self.deadline = time.monotonic() + budget_s
        self.outcomes: dict[str, Outcome] = {}
        self.stopped = ""  # why nothing more runs (a gate failed)
        self._lock = threading.Lock()

    def run(self, phases: list[list[list[Step]]]) -> None:
        for phase in phases:
            lanes = [threading.Thread(target=self._run_lane, args=(lane,)) for lane in phase]
            for lane in lanes:
                lane.start()
            for lane in lanes:
                lane.join()

    def _run_lane(self, lane: list[Step]) -> None:
        for step in lane:
            outcome = self._run_step(step)
            with self._lock:
                self.outcomes[step.name] = outcome
                if step.gate and outcome.status != "passed" and not self.stopped:
                    self.stopped = f"{step.name} did not pass"

    def _run_step(self, step: Step) -> Outcome:
        if self.stopped:
            return Outcome("not-run", note=self.stopped)
        if step.needs and not (ROOT / step.needs).is_file():
            return Outcome("skipped", note=f"{step.needs} is not there")
        left = self.deadline - time.monotonic()
        if left < MIN_STEP_S:
            return Outcome("not-run", note=f"budget spent ({left:.0f} s left)")
        timeout = min(step.cap_s, left)
        env = {**self.env, **step.env}
        with open(self.out / step.log, "ab") as log:
            log.write(f"\n===== {step.name}: {shlex.join(step.command)}\n".encode())
            log.flush()
            started = time.monotonic()
            # Its own process group, so that a time-out ends what it started too (compute-sanitizer's python).
            process = subprocess.Popen(step.command, cwd=ROOT, env=env, start_new_session=True,
                                       stdout=subprocess.PIPE if step.facts else log, stderr=log)
            try:
                stdout, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                log.write(f"===== {step.name}: killed after {timeout:.0f} s\n".encode())
                return Outcome("timeout", time.monotonic() - started, None, f"cap {timeout:.0f} s")
            seconds = time.monotonic() - started
            if step.facts:
                log.write(stdout)
            log.write(f"===== {step.name}: exit status {process.returncode} after {seconds:.1f} s\n".encode())
        outcome = Outcome("passed" if process.returncode == 0 else "failed", seconds, process.returncode)
        if step.facts and stdout.strip():
            outcome.facts = json.loads(stdout.decode().strip().splitlines()[-1])
        if outcome.status == "passed" and step.output and not (self.out / step.output).is_file():
            outcome.status, outcome.note = "failed", f"it wrote no {step.output}"
        return outcome


def summarize(phases: list[list[list[Step]]], runner: Runner, mode: str, budget_s: float, elapsed_s: float) -> dict:
    steps = [step for phase in phases for lane in phase for step in lane]
    ok = all(runner.outcomes[s.name].status in ("passed", "skipped") for s in steps)
    facts_found = next((o.facts for o in runner.outcomes.values() if o.facts), None)
    return {"mode": mode, "ok": ok, "budget_s": budget_s, "elapsed_s": round(elapsed_s, 1),
            "note": "plumbing check: timings on a CPU are not measurements" if mode == "cpu" else "",
            "facts": facts_found,
            "steps": [{"name": s.name, "command": shlex.join(s.command), "env": s.env, "log": s.log,
                       "output": s.output, "cap_s": s.cap_s,
                       **{k: v for k, v in dataclasses.asdict(runner.outcomes[s.name]).items() if k != "facts"}}
                      for s in steps]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="The files under OUT are listed in tools/gpu_check.py's docstring.")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-out",
                        help="folder for the files (build/gpu-out/)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for everything, the build included (480: a device call's 10 minutes less "
                             "the machine's start and a margin; fastnas's choice)")
    parser.add_argument("--cpu", action="store_true", help="the same steps on the CPU, tiny, no build, no sanitizers")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--facts", choices=["cpu", "cuda"], help=argparse.SUPPRESS)  # the build-facts step
    args = parser.parse_args(argv)
    if args.facts:
        info = facts(args.facts)
        print(json.dumps(info))
        problem = facts_problem(info, args.facts)
        if problem:
            print(f"gpu-check: {problem}", file=sys.stderr)
        return 1 if problem else 0
    if args.budget <= MIN_STEP_S:
        parser.error(f"--budget: expected more than {MIN_STEP_S} seconds, got {args.budget:g}")

    out = args.out.resolve()
    sanitizer = None if args.cpu else find_compute_sanitizer()
    phases = plan(args.cpu, out, sanitizer=sanitizer)
    if args.dry_run:
        for number, phase in enumerate(phases, 1):
            for lane_number, lane in enumerate(phase, 1):
                for step in lane:
                    env = " ".join(f"{k}={v}" for k, v in step.env.items())
                    print(f"phase {number} lane {lane_number} {step.name} (cap {step.cap_s:g} s, >> {step.log}): "
                          f"{env + ' ' if env else ''}{shlex.join(step.command)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for phase in phases:  # fresh logs and outputs: the summary must describe this run only
        for step in (s for lane in phase for s in lane):
            for name in (step.log, step.output):
                if name:
                    (out / name).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    if not args.cpu and sanitizer is None:
        print("gpu-check: compute-sanitizer not found (PATH, CUDA_HOME/bin, /usr/local/cuda/bin): "
              "memcheck and racecheck will fail", file=sys.stderr)
    started = time.monotonic()
    runner = Runner(out, args.budget, env)
    runner.run(phases)
    summary = summarize(phases, runner, "cpu" if args.cpu else "gpu", args.budget, time.monotonic() - started)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    for step in summary["steps"]:
        note = f" ({step['note']})" if step["note"] else ""
        print(f"gpu-check: {step['status']:<8} {step['name']:<18} {step['seconds']:6.1f} s{note}")
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    if len(files) > MAX_FILES:
        print(f"gpu-check: FAILED: {out} holds {len(files)} files, the device tool brings back {MAX_FILES}: {files}")
        return 1
    print(f"gpu-check: {'passed' if summary['ok'] else 'FAILED'} in {summary['elapsed_s']} s; files in {out}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
