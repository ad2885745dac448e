"""What a timed benchmark run needs, whatever it fits: a memory monitor, a training clock
that leaves evaluation out, the machine's description, and one run per subprocess.

Used by ``benchmarks/peers.py``: a script re-invokes itself with ``--single SPEC`` through
:func:`launch`, the child prints its result with :func:`emit`, so that every run's peak
memory is its own and no run's allocations or thread pools slow the next one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULT_MARK = "@@BENCH-RESULT@@ "
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the system has none)."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


# -- memory ---------------------------------------------------------------------
def rss_bytes() -> int:
    """The resident set size of this process, from /proc/self/statm (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def malloc_trim() -> None:
    """Hand the C heap's free memory back to the system (glibc), so that memory freed
    after an evaluation does not count as training's. A no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryMonitor:
    """The peak resident memory of training, evaluation excluded.

    A thread samples the process's RSS every ``interval`` seconds while training runs
    (not while paused for an evaluation; the C heap is trimmed after each), and the peak
    is reported above the RSS measured when the monitor was made (after imports, data
    and the exact posterior).
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.paused = False
        malloc_trim()
        self.baseline = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.paused:
                self.peak = max(self.peak, rss_bytes())

    def pause(self) -> None:
        """Stop sampling (an evaluation begins), after a last sample."""
        if not self.paused:
            self.peak = max(self.peak, rss_bytes())
        self.paused = True

    def resume(self) -> None:
        """Sample again (training resumes), the evaluation's freed memory handed back first."""
        malloc_trim()
        self.paused = False

    def stop(self) -> dict[str, Any]:
        """End the monitor; the baseline, the peak and the peak above the baseline, in MiB."""
        self.pause()
        self._stop.set()
        self._thread.join()
        return {
            "rss_baseline_mb": self.baseline / 2**20,
            "rss_peak_mb": self.peak / 2**20,
            "peak_mb": (self.peak - self.baseline) / 2**20,
            "memory_measure": "peak RSS sampled every 10 ms during training minus RSS before the run",
        }


# -- the clock ------------------------------------------------------------------
class Tracker:
    """The training clock (evaluation excluded), the evaluation schedule and the stop rule.

    Training time accumulates between evaluations. An evaluation is due when the
    training time since the last one reaches ``max(min_interval, rel_interval * training
    time)``, and at the end. ``evaluate`` returns ``{"error": float, ...}`` (a point of
    the curve) or ``None`` (nothing to measure yet: no draws). A run stops when the error
    falls below ``stop_below`` (``None``: never), when it is not finite, or when the time
    budget or ``max_steps`` is spent. The process's CPU time over training is kept too
    (``cpu_per_wall``: about 1 for one busy thread).
    """

    def __init__(
        self,
        evaluate: Callable[[], dict[str, Any] | None],
        memory: MemoryMonitor,
        budget_seconds: float,
        stop_below: float | None,
        min_interval: float,
        rel_interval: float,
        max_steps: int | None = None,
    ) -> None:
        self.evaluate, self.memory = evaluate, memory
        self.budget_seconds, self.max_steps, self.stop_below = budget_seconds, max_steps, stop_below
        self.min_interval, self.rel_interval = min_interval, rel_interval
        self.curve: list[dict[str, Any]] = []
        self.train_time = self.eval_time = self.cpu_time = 0.0
        self.steps = 0
        self.last_eval_time = 0.0
        self.done = False
        self.stop_reason = ""
        self._segment: tuple[float, float] | None = None

    # the clock
    def start(self) -> None:
        """Start (or restart, after an evaluation) the clock."""
        self._segment = (time.perf_counter(), time.process_time())

    def _close_segment(self) -> None:
        if self._segment is not None:
            wall, cpu = self._segment
            self.train_time += time.perf_counter() - wall
            self.cpu_time += time.process_time() - cpu
            self._segment = None

    def elapsed(self) -> float:
        """Training time so far."""
        return self.train_time + (time.perf_counter() - self._segment[0] if self._segment else 0.0)

    # the schedule
    def due(self) -> bool:
        """Whether an evaluation is due by the schedule."""
        elapsed = self.elapsed()
        return elapsed - self.last_eval_time >= max(self.min_interval, self.rel_interval * elapsed)

    def out_of_budget(self) -> bool:
        """Whether the time budget, or the step budget, is spent."""
        return self.elapsed() >= self.budget_seconds or (self.max_steps is not None and self.steps >= self.max_steps)

    def after_step(self, step: int, final: bool = False, force: bool = False) -> bool:
        """Called after training step ``step`` (counted from 1), or after a chunk of steps
        ending there; evaluates when due (or ``force``); whether to stop."""
        if self.done:
            return True
        self.steps = step
        out_of_budget = self.out_of_budget()
        if not (final or out_of_budget or force or self.due()):
            return False
        point = self.measure()
        error = math.inf if point is None else point["error"]
        reached = self.stop_below is not None and error < self.stop_below
        if reached or out_of_budget or final or (point is not None and not math.isfinite(error)):
            self.finish("reached" if reached else "not finite" if point is not None and not math.isfinite(error)
                        else "completed" if final else "budget")
        return self.done

    def measure(self) -> dict[str, Any] | None:
        """Pause the clock, evaluate, record the point (if any), restart the clock."""
        self._close_segment()
        self.memory.pause()
        began = time.perf_counter()
        point = self.evaluate()
        if point is not None:
            point = {"step": self.steps, "time": self.train_time, **point}
            self.curve.append(point)
        self.last_eval_time = self.train_time
        self.memory.resume()
        self.eval_time += time.perf_counter() - began
        self.start()
        return point

    def finish(self, reason: str) -> None:
        """Stop the clock for good, saying why."""
        self._close_segment()
        self.done, self.stop_reason = True, reason

    def summary(self) -> dict[str, Any]:
        """The run's record: steps, times, the stop reason, the final point and the curve."""
        final = self.curve[-1] if self.curve else None
        return {
            "steps": self.steps,
            "train_seconds": self.train_time,
            "eval_seconds": self.eval_time,
            "cpu_per_wall": self.cpu_time / self.train_time if self.train_time else None,
            "time_per_step_ms": 1000 * self.train_time / self.steps if self.steps else None,
            "stop_reason": self.stop_reason,
            "final_error": final["error"] if final else None,
            "final_latents": final["latents"] if final else None,
            "curve": self.curve,
        }


# -- the machine and the subprocesses ----------------------------------------------
def fit_settings(texts: Sequence[str]) -> dict[str, Any]:
    """The fit settings of repeated ``--setting NAME=JSON`` options (``steps=4000``)."""
    settings = {}
    for text in texts:
        name, _, value = text.partition("=")
        settings[name] = json.loads(value)
    return settings


def versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``packages`` (``None`` where one is missing)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str | None:
    """The CPU's model name, from /proc/cpuinfo (``None`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else None


def machine_info(packages: Sequence[str] = ("torch",)) -> dict[str, Any]:
    """CPUs (count, those this process may use, model), platform, Python, the versions
    of ``packages`` and the load average."""
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": versions(packages),
        "load_average_at_start": load_average(),
    }


def write_report(report: dict[str, Any], path: Path, started: float) -> None:
    """Write ``report`` as JSON, stamped with the seconds since ``started``
    (``time.perf_counter``) and the load average now."""
    report["total_seconds"] = time.perf_counter() - started
    report["machine"]["load_average_now"] = load_average()
    path.write_text(json.dumps(report, indent=1))


def finish_report(report: dict[str, Any], json_path: Path, table: Callable[[dict[str, Any]], str],
                  plot: Callable[[dict[str, Any], Path], None]) -> None:
    """Write the report's table into it, the report and its plot (a PNG beside the JSON);
    print the table."""
    report["table"] = table(report)
    json_path.write_text(json.dumps(report, indent=1))
    plot(report, json_path.with_suffix(".png"))
    print(f"\n{report['table']}\n\nwrote {json_path} and {json_path.with_suffix('.png')}")


def command_settings(args: Any, argv: Sequence[str] | None, script: str) -> dict[str, Any]:
    """A benchmark's options as JSON-able settings, with the command that gave them."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("single", "replot")}
    settings["command"] = " ".join(["python", *(sys.argv if argv is None else [script, *argv])])
    return settings


def run_report(args: Any, report: dict[str, Any], json_path: Path,
               run_all: Callable[[Any, dict[str, Any], Callable[[], None]], None],
               finish: Callable[[dict[str, Any], Path], None]) -> int:
    """Run a benchmark's launches (``run_all``, saving the report after each), then write
    its table, JSON and plot (``finish``); the exit status."""
    started = time.perf_counter()
    run_all(args, report, lambda: write_report(report, json_path, started))
    finish(report, json_path)
    return 0


def emit(result: dict[str, Any]) -> None:
    """Print a child's result for :func:`launch` to find."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def launch(script: str | Path, spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script --single SPEC`` in a fresh subprocess; its result (``spec`` with a
    ``failed`` message where it printed none)."""
    cmd = [sys.executable, str(Path(script).resolve()), "--single", json.dumps(spec)]
    began = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {**spec, "failed": f"timed out after {timeout:.0f} s", "curve": []}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return {**json.loads(line[len(RESULT_MARK):]), "process_seconds": time.perf_counter() - began}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {**spec, "failed": f"exit {proc.returncode}: " + "\n".join(tail), "curve": []}
