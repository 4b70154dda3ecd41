"""The benchmark helpers the targets depend on (fast: no benchmark is run)."""
import os
import statistics

from benchmarks import common, ingest_bench


def test_interleaved_timing_runs_the_cases_round_robin_and_takes_medians(monkeypatch):
    calls = []
    durations = {"a": [5, 1, 3], "b": [2, 8, 4]}
    now = {"t": 0.0}

    def case(name):
        def run():
            calls.append(name)
            now["t"] += durations[name][sum(1 for c in calls if c == name) - 1]
            return len(calls)
        return run

    monkeypatch.setattr(common.time, "perf_counter", lambda: now["t"])
    timed = common.timed_medians_interleaved({"a": case("a"), "b": case("b")}, repeats=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert timed["a"] == (statistics.median(durations["a"]), 5)
    assert timed["b"] == (statistics.median(durations["b"]), 6)


def test_break_even_list_size_solves_the_end_to_end_inequality():
    startup, steady, loop = 12.0, 4000.0, 2000.0
    n = ingest_bench.break_even(startup, steady, loop)
    # At n, startup + n / steady equals n / (1.6 loop): the CLI reaches 1.6x end to end.
    assert abs((startup + n / steady) - n / (ingest_bench.TARGET_FACTOR * loop)) < 1e-9
    assert ingest_bench.break_even(startup, 3000.0, loop) is None   # 1.5x steady: never


def test_a_partial_run_replaces_only_its_own_sections():
    from benchmarks.run import replace_sections

    existing = ("# Benchmarks\n\nMachine: old.\n\n## Recall evaluation\n\n| old |\n\nTarget: t.\n\n"
                "## Ingest\n\n| ingest |\n\nIngest notes.\n")
    new = "# Benchmarks\n\nMachine: new.\n\n## Recall evaluation\n\n| new |\n\nTarget: t. Met.\n"
    merged = replace_sections(existing, new, "Measured today.")
    assert merged == ("# Benchmarks\n\nMachine: old.\n\n## Recall evaluation\n\nMeasured today.\n\n"
                      "| new |\n\nTarget: t. Met.\n\n## Ingest\n\n| ingest |\n\nIngest notes.\n")
    # Hand-written "### " subsections of a replaced section stay, after the new tables.
    kept = replace_sections(existing.replace("Target: t.\n\n", "Target: t.\n\n### Tried (2026-01-01)\n\n"
                                             "It did not help.\n\n"), new, "Measured today.")
    assert kept == ("# Benchmarks\n\nMachine: old.\n\n## Recall evaluation\n\nMeasured today.\n\n"
                    "| new |\n\nTarget: t. Met.\n\n### Tried (2026-01-01)\n\nIt did not help.\n\n"
                    "## Ingest\n\n| ingest |\n\nIngest notes.\n")
    # A stage without a section yet is appended; the others stay as they were.
    appended = replace_sections("# Benchmarks\n\n## Ingest\n\n| ingest |\n", new, "Measured today.")
    assert appended == ("# Benchmarks\n\n## Ingest\n\n| ingest |\n\n## Recall evaluation\n\n"
                        "Measured today.\n\n| new |\n\nTarget: t. Met.\n")


def test_a_partial_runs_note_gives_a_command_make_runs_and_says_when_it_was_quick():
    # `make bench --only X` is not a command make accepts (--only would be make's own option); the
    # Makefile's bench target hands ARGS to benchmarks.run.
    import re

    from benchmarks.run import partial_run_note

    full, quick = partial_run_note(["recall", "coverage"], False), partial_run_note(["recall"], True)
    assert '`make bench ARGS="--only recall coverage"`' in full and "quick" not in full
    assert '`make bench ARGS="--quick --only recall"` (quick' in quick
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Makefile")) as f:
        recipe = re.search(r"^bench:.*\n\t(.*)$", f.read(), re.M).group(1)
    assert recipe.endswith("-m benchmarks.run $(ARGS)")


def test_the_machine_line_names_the_stack_the_numbers_were_measured_on():
    """benchmarks/results.md records which pinned stack ran (docs/stacks.md): the TFX and TF
    versions the packages themselves report."""
    import tensorflow as tf
    from tfx import version as tfx_version

    from benchmarks import run

    line = run.machine()
    assert line.endswith(f", TFX {tfx_version.__version__}, TF {tf.__version__}"), line
