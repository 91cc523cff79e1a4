"""Timing the scripts under test from the outside, each group from when it is ready.

- start-up: from starting the processes to the first moment their consumer group
  is ready (groups.py; polled every 20 ms), reported as `startup_s`;
- processing: from then to the moment the benchmark reads the last expected
  record from the output topic, reported as `seconds` and `readings_per_s`.
  Records already out when the clock starts (a process of a group that worked
  before the others had joined) are reported as `outputs_at_start`.

Side by side, several groups run at once on the same data, and each one's CPU
time from its Stable to its last record is measured instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench_errors import BenchmarkError
from groups import ConsumerGroup, GroupAdmin, Run, consumer_groups
from sampling import machine_busy_seconds
from sensor_lib.polling import Deadline
from sensor_lib.stop_signals import raise_if_stopped
from supervision import wait_until


def measurement(name: str, readings: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "readings": readings,
        "seconds": round(seconds, 3),
        "readings_per_s": round(readings / seconds),
        **extra,
    }


def time_consumers(
    run: Run,
    name: str,
    script: str,
    flags: Sequence[str],
    outputs: int,
    instances: int = 1,
    *,
    cpu_of: Mapping[str, Callable[[], float]] | None = None,
) -> tuple[dict[str, Any], str]:
    """Run `instances` processes of `script` as one ConsumerGroup; time them until
    `outputs` records are on its output topic. The CPU time they spend meanwhile is
    `cpu_s`; that of each of `cpu_of` (a name and its CPU seconds so far), `<name>_cpu_s`.

    Returns the measurement and the output topic.
    """
    admin = GroupAdmin(run.address)
    consumers = ConsumerGroup(run, name, script, flags, instances)
    try:
        children = consumers.children
        ready = wait_until(lambda: consumers.is_stable(admin), f"{name} group", 120, children)
        clocks = {"cpu_s": consumers.cpu_seconds}
        clocks.update({f"{other}_cpu_s": clock for other, clock in (cpu_of or {}).items()})
        began = {clock: read() for clock, read in clocks.items()}
        busy = machine_busy_seconds()
        early = consumers.read_outputs(0)  # out before the clock started: a head start
        done = wait_until(
            lambda: consumers.read_outputs(0.05) >= outputs,
            f"{outputs} records from {name}",
            run.timeout,
            children,
            0,
        )
        # Cores busy on average: theirs, and the machine's (they, the broker, the benchmark).
        spent = {clock: read() - began[clock] for clock, read in clocks.items()}
        cores = spent["cpu_s"] / (done - ready)
        machine_cores = (machine_busy_seconds() - busy) / (done - ready)
        for child in children:
            child.rss_mib()
        peak = consumers.peak_rss_mib()
    finally:
        consumers.stop()
    result = measurement(
        name,
        run.readings,
        done - ready,
        peak_rss_mib=peak,
        cores=round(cores, 2),
        machine_cores=round(machine_cores, 2),
        **{clock: round(seconds, 2) for clock, seconds in spent.items()},
    )
    started = consumers.started
    result.update(startup_s=round(ready - started, 3), wall_s=round(done - started, 3))
    if early:
        result["outputs_at_start"] = early
    return result, consumers.sink


def side_by_side(
    run: Run,
    groups: dict[str, ConsumerGroup],
    outputs: int | Mapping[str, int],
    on_done: Callable[[str], None],
    on_stable: Callable[[str], None] = lambda name: None,
) -> None:
    """Follow every group at once: call `on_stable(name)` when a group is Stable, and
    `on_done(name)` once its `outputs`-th record (or `outputs[name]`-th) is on its output
    topic."""
    admin = GroupAdmin(run.address)
    stable: set[str] = set()
    done: set[str] = set()
    deadline = Deadline(run.timeout)
    while len(done) < len(groups):
        raise_if_stopped()
        for name, consumers in groups.items():
            if name in done:
                continue
            for child in consumers.children:
                child.check()
            if name not in stable:
                if consumers.is_stable(admin):
                    stable.add(name)
                    on_stable(name)
            elif consumers.read_outputs(0.02) >= (
                outputs if isinstance(outputs, int) else outputs[name]
            ):
                done.add(name)
                on_done(name)
        if deadline.passed():
            raise BenchmarkError(f"side by side: not done within {run.timeout:g} s")
        if not stable - done:  # nobody to read from: ask the broker again in a while
            time.sleep(0.05)


def cpu_side_by_side(
    run: Run, scripts: dict[str, tuple[str, Sequence[str]]], outputs: int
) -> dict[str, tuple[dict[str, Any], str]]:
    """Run one process of each script at the same time, each in its own group on the
    same raw topic; measure the CPU time each spends from its group's Stable to its
    `outputs`-th record.

    CPU time per reading is the inverse of readings per second per core. Measured
    side by side, both processes meet the same neighbours on a noisy machine, which
    one after the other they do not. Returns name -> (measurement, output topic).
    """
    began: dict[str, float] = {}
    spent: dict[str, float] = {}
    with consumer_groups(run, scripts) as groups:

        def on_stable(name: str) -> None:
            began[name] = groups[name].cpu_seconds()

        def on_done(name: str) -> None:
            spent[name] = groups[name].cpu_seconds() - began[name]

        side_by_side(run, groups, outputs, on_done, on_stable)
    return {
        name: (
            {
                "name": f"{name}-side-by-side",
                "readings": run.readings,
                "cpu_s": round(spent[name], 2),
                "cpu_us_per_reading": round(spent[name] / run.readings * 1e6, 2),
            },
            consumers.sink,
        )
        for name, consumers in groups.items()
    }
