"""tools/gpu_check.py: the plan a lent GPU machine runs, and the runner's loud failures (on tiny fake steps)."""

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_check  # noqa: E402
from gpu_check import Runner, Step  # noqa: E402


def steps_of(phases):
    return {step.name: step for phase in phases for lane in phase for step in lane}


@pytest.mark.parametrize("cpu", [False, True])
def test_plan_writes_at_most_eight_files(cpu, tmp_path):
    steps = steps_of(gpu_check.plan(cpu, tmp_path)).values()
    files = {s.log for s in steps} | {s.output for s in steps if s.output} | {gpu_check.SUMMARY}
    assert len(files) <= gpu_check.MAX_FILES
    for step in steps:  # each output is asked for under OUT: the device tool returns nothing else
        if step.output:
            assert any(arg.endswith(f"{tmp_path / step.output}") for arg in step.command), step.name


def test_gpu_plan_sanitizes_the_op_tests_and_fails_on_any_error(tmp_path):
    steps = steps_of(gpu_check.plan(False, tmp_path, sanitizer="/opt/cs"))
    for tool in ("memcheck", "racecheck"):
        command = steps[tool].command
        assert command[:4] == ["/opt/cs", "--error-exitcode=1", "--report-api-errors", "no"]
        assert command[command.index("--tool") + 1] == tool
        tested = [arg for arg in command if arg.startswith("tests/")]
        assert tested == gpu_check.op_test_files() and command[-2:] == ["-k", "cuda"]
    # memcheck sees every allocation's bounds only without the caching allocator
    assert steps["memcheck"].env["PYTORCH_NO_CUDA_MEMORY_CACHING"] == "1"
    assert "PYTORCH_NO_CUDA_MEMORY_CACHING" not in steps["racecheck"].env
    assert steps["build"].gate and steps["build-facts"].gate
    assert steps["nb201-scoring"].needs == gpu_check.NB201_SCORING_BENCH
    assert "--all-cells" in steps["nb201-scoring"].command  # the GPU's all-cells target is timed, not estimated
    assert "--all-cells" not in steps_of(gpu_check.plan(True, tmp_path))["nb201-scoring"].command


def test_every_op_of_the_schema_has_its_tests_sanitized():
    files = gpu_check.op_test_files()
    for name in ["mixed_node", "at_loss", "rank_corr", "foreach_reduce", "pair_distance"]:
        assert f"tests/test_{name}.py" in files
    assert "tests/test_gram_distance.py" not in files  # tested beside pair_distance
    missing = [path for path in files if not (ROOT / path).is_file()]
    assert not missing, f"ops without a test file of their own (or an entry in TESTED_WITH): {missing}"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run(tmp_path, phases, budget=60.0):
    runner = Runner(tmp_path, budget, dict(os.environ))
    runner.run(phases)
    return runner


def test_failures_timeouts_and_missing_outputs_are_failures(tmp_path):
    phases = [[[Step("ok", python("print('hi')"), "a.log", 30),
                Step("fails", python("import sys; sys.exit(3)"), "a.log", 30),
                Step("no-output", python("pass"), "a.log", 30, output="wanted.json"),
                Step("writes", python(f"open({str(tmp_path / 'w.json')!r}, 'w').write('1')"), "a.log", 30,
                     output="w.json"),
                Step("absent", python("pass"), "a.log", 30, needs="no/such/file.py")]]]
    runner = run(tmp_path, phases)
    status = {name: o.status for name, o in runner.outcomes.items()}
    assert status == {"ok": "passed", "fails": "failed", "no-output": "failed", "writes": "passed",
                      "absent": "skipped"}
    assert runner.outcomes["fails"].returncode == 3
    log = (tmp_path / "a.log").read_text()
    assert "hi\n" in log and "===== fails: exit status 3" in log
    summary = gpu_check.summarize(phases, runner, "cpu", 60.0, 1.0)
    assert summary["ok"] is False


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); p.wait()")
    started = time.monotonic()
    runner = run(tmp_path, [[[Step("hangs", python(code), "a.log", 2)]]])
    assert runner.outcomes["hangs"].status == "timeout" and time.monotonic() - started < 30
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if is_dead(grandchild):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the step's child outlived the time-out")


def is_dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_failed_gate_stops_everything_after_it(tmp_path):
    phases = [[[Step("build", python("import sys; sys.exit(1)"), "a.log", 30, gate=True)]],
              [[Step("tests", python("pass"), "b.log", 30)], [Step("bench", python("pass"), "b.log", 30)]]]
    runner = run(tmp_path, phases)
    assert [runner.outcomes[n].status for n in ("build", "tests", "bench")] == ["failed", "not-run", "not-run"]
    assert runner.outcomes["tests"].note == "build did not pass"


def test_lanes_run_side_by_side_and_the_budget_is_enforced(tmp_path):
    def timed(name):  # writes when it started and ended
        return python(f"import time; t = time.time(); time.sleep(1.5); "
                      f"open({str(tmp_path / name)!r}, 'w').write(f'{{t}} {{time.time()}}')")
    phases = [[[Step("a", timed("a"), "a.log", 30)], [Step("b", timed("b"), "b.log", 30)]],
              [[Step("late", timed("late"), "a.log", 30)]]]
    runner = run(tmp_path, phases, budget=gpu_check.MIN_STEP_S + 1)
    (a_start, a_end), (b_start, b_end) = [map(float, (tmp_path / n).read_text().split()) for n in "ab"]
    assert a_start < b_end and b_start < a_end  # the two lanes overlapped
    assert runner.outcomes["a"].status == runner.outcomes["b"].status == "passed"
    # after 1.5 s less than MIN_STEP_S is left: the late step does not start
    assert runner.outcomes["late"].status == "not-run" and "budget" in runner.outcomes["late"].note
    assert not (tmp_path / "late").exists()


def test_facts_step_output_lands_in_the_summary(tmp_path):
    phases = [[[Step("facts", python("print('noise'); print('{\"gpus\": []}')"), "a.log", 30, facts=True)]]]
    runner = run(tmp_path, phases)
    assert gpu_check.summarize(phases, runner, "gpu", 60.0, 1.0)["facts"] == {"gpus": []}
    assert "noise" in (tmp_path / "a.log").read_text()


@pytest.mark.parametrize("info, problem", [
    ({"build": {"with_cuda": False}, "gpus": []}, "the build has no CUDA kernels"),
    ({"build": {"with_cuda": True}, "gpus": []}, "no GPU is visible to torch"),
    ({"build": {"with_cuda": True}, "gpus": [{"name": "H200", "has_kernel": False}]}, "holds no code for ['H200']"),
    ({"build": {"with_cuda": True}, "gpus": [{"name": "H200", "has_kernel": True}]}, None),
])
def test_facts_problem_on_cuda(info, problem):
    found = gpu_check.facts_problem(info, "cuda")
    assert found == problem if problem is None else problem in found
    assert gpu_check.facts_problem(info, "cpu") is None


def test_dry_run_prints_the_gpu_plan_and_runs_nothing(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "memcheck" in printed and "PYTORCH_NO_CUDA_MEMORY_CACHING=1" in printed and "--error-exitcode=1" in printed
    assert not (tmp_path / "out").exists()


def test_budget_must_leave_room_for_a_step(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--budget", "5"])
    assert "--budget: expected more than 10 seconds, got 5" in capsys.readouterr().err


def test_facts_on_a_machine_without_gpu():
    # The whole CPU mode runs in CI as `make gpu-check-cpu`; here only what its facts step reports.
    info = gpu_check.facts("cpu")
    json.dumps(info)
    assert info["build"]["fastnas"] and info["gpus"] == []
