"""The benchmark suites' own code: the GPU suite checked on the CPU (CI has no GPU: every section
runs a few steps with `--smoke` and produces the rows, numbers and refusals a GPU run would), and
the results files' provenance."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import gpu


@pytest.mark.slow
def test_every_gpu_section_runs_its_code_on_the_cpu(real_data_dir):
    rows = gpu.run_sections(list(gpu.SECTIONS), device="cpu", smoke=True)
    by_section: dict[str, list[dict]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    assert list(by_section) == list(gpu.SECTIONS)
    assert len({row["row"] for row in rows}) == len(rows)  # the key that merges results files

    peak = {row["dtype"]: row["TFLOP_s"] for row in by_section["peak"]}
    assert set(peak) == {"float32", "bfloat16"} and min(peak.values()) > 0

    overhead = by_section["overhead"]
    assert len(overhead) == 4 and all(row["device"] == "cpu" for row in overhead)
    assert all(
        0.2 < row["dlab / hand"] < 5 and 0.2 < row["hand / hand again"] < 5 for row in overhead
    )

    fast, seed = by_section["mnist"]
    assert fast["row"] == "mnist/mnist_fast.yaml, eager" and seed["row"] == "mnist/seed recipe"
    assert fast["reached"] == "0/1" and fast["median_seconds"] is None  # 4 steps: not 99%
    for row in (fast, seed):  # stopped on validation; the test split read only at a stop
        assert 0.0 < row["per_epoch_validation"][-1] < 0.99 and row["test_accuracy_at_stop"] is None

    (char,) = by_section["gpt"]
    assert char["steps"] == 6 and char["step_reached"] is None
    assert char["best_val_loss"] < math.log(65)  # it learned something in 6 steps
    assert [step for step, _ in char["val_curve"]] == [6]

    (use,) = by_section["utilisation"]
    assert use["recipe"] == "mnist_fast" and use["utilisation"] > 0
    assert use["peak_rss_mib"] > 100  # the process's, MNIST and torch included

    engines = {(row["engine"], row["batch"]): row for row in by_section["inference"]}
    assert set(engines) == {
        (name, batch) for name in ("eager float32", "eager bf16 autocast") for batch in (1, 64)
    }
    assert engines["eager float32", 1]["speedup_vs_eager"] == 1
    assert float(engines["eager bf16 autocast", 64]["max_abs_diff_vs_eager"]) < 0.1
    assert all(row["peak_rss_mib"] > 100 and row["call_mib"] >= 0 for row in engines.values())


@pytest.mark.slow
def test_time_to_accuracy_reads_the_target_of_the_recipes_data_set(real_data_dir):
    from benchmarks import speed

    run = speed.time_to_accuracy("fashion_mnist_fast", ("train.max_steps=3",), "three steps")
    assert run["target"] == "validation accuracy >= 0.93" and run["epochs"] == 1
    assert run["seconds_to_target"] is None  # 3 steps do not reach 93%, so no time is claimed
    assert run["test_accuracy_at_stop"] is None  # and the test split was never read
    assert 0.0 < run["per_epoch_validation"][0] < 0.93

    slow = {"seconds_to_target": 10.0}
    assert speed.with_speedup({"seconds_to_target": 2.5}, slow, "seed")["speedup_vs_seed"] == 4.0
    assert "speedup_vs_seed" not in speed.with_speedup(run, slow, "seed")


def test_a_race_reports_the_spread_over_seeds_and_only_counts_runs_that_reached():
    from benchmarks import speed

    def run(seconds, test):
        return {"target": "validation accuracy >= 0.99", "seconds_to_target": seconds,
                "test_accuracy_at_stop": test}  # fmt: skip

    row = speed.race("x", [run(4.0, 0.991), run(6.0, 0.989), run(None, None), run(5.0, 0.990)])
    assert row["reached"] == "3/4" and row["seeds"] == 4
    assert (row["mean_seconds"], row["min_seconds"], row["max_seconds"]) == (5.0, 4.0, 6.0)
    assert (row["mean_test_accuracy"], row["min_test_accuracy"]) == (0.99, 0.989)
    assert speed.with_speedup(row, {"mean_seconds": 10.0}, "seed")["speedup_vs_seed"] == 2.0
    assert row["peak_rss_mib"] is None  # no run measured its memory


def test_a_measured_run_carries_the_peak_memory_of_its_own_allocations():
    from benchmarks import speed

    def allocates(mib):
        block = torch.ones(mib * 2**18)  # float32: mib MiB, every page touched
        return {"seconds_to_target": None, "test_accuracy_at_stop": None, "sum": float(block[0])}

    large = speed.measured(allocates, 200)
    small = speed.measured(allocates, 8)  # after the large one: its peak must not carry over
    assert large["peak_rss_mib"] - small["peak_rss_mib"] > 150
    row = speed.race("x", [{**small, "target": "t"}, {**large, "target": "t"}])
    assert row["peak_rss_mib"] == large["peak_rss_mib"]


def test_inference_rows_carry_each_engines_own_working_memory():
    from benchmarks.inference import latency_rows

    def engine(mib):  # a call that allocates `mib` MiB and touches every page
        return lambda x: torch.ones(mib * 2**18).add_(x.sum())

    engines = {"large": engine(200), "small": engine(8)}
    rows = latency_rows(engines, torch.ones(4, 3), 3, {"large": 0.0, "small": 0.0}, batches=(2,))
    memory = {row["engine"]: row for row in rows}
    assert memory["large"]["call_mib"] > 150 and memory["small"]["call_mib"] < 50
    assert memory["large"]["peak_rss_mib"] > memory["small"]["peak_rss_mib"] + 100


def test_the_gpu_suite_refuses_a_missing_gpu_and_unknown_sections(real_data_dir):
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device here"):
            gpu.run_sections(["peak"], device="cuda")
    with pytest.raises(SystemExit, match="unknown section 'speed'; choose from peak, overhead"):
        gpu.run_sections(["speed"], device="cpu", smoke=True)


def test_results_rows_carry_their_provenance_and_never_mix_code_versions(tmp_path, monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    stamp = common.provenance()
    assert stamp["commit"] != "unknown" and stamp["torch"] == torch.__version__
    assert stamp["threads"] == torch.get_num_threads() and stamp["omp_wait_policy"] == "PASSIVE"

    def run(commit, rows):
        monkeypatch.setattr(common, "provenance", lambda: {**stamp, "commit": commit})
        path = common.write_results("suite", rows, key="model")
        return [(r["model"], r["value"], r["commit"]) for r in json.loads(path.read_text())["rows"]]

    assert run("aaa", [{"model": "mlp", "value": 1}]) == [("mlp", 1, "aaa")]
    # the same clean commit, another model: one file holds both invocations
    assert run("aaa", [{"model": "cnn", "value": 2}]) == [("mlp", 1, "aaa"), ("cnn", 2, "aaa")]
    assert run("aaa", [{"model": "cnn", "value": 3}]) == [("mlp", 1, "aaa"), ("cnn", 3, "aaa")]
    # after a change to the code, the earlier rows go: the table is one code version's
    assert run("bbb", [{"model": "cnn", "value": 4}]) == [("cnn", 4, "bbb")]
    assert run("bbb+dirty", [{"model": "mlp", "value": 5}]) == [("mlp", 5, "bbb+dirty")]
    # nor machines: a run on another processor the same day starts the file afresh
    assert run("bbb", [{"model": "mlp", "value": 5}]) == [("mlp", 5, "bbb")]
    monkeypatch.setattr(common, "hardware", lambda device=None: {"cpu": "Another CPU"})
    assert run("bbb", [{"model": "cnn", "value": 6}]) == [("cnn", 6, "bbb")]
    # and a row's own measurement is not overwritten by the stamp's
    path = common.write_results("suite", [{"model": "x", "value": 7, "threads": 1}])
    assert json.loads(path.read_text())["rows"][0]["threads"] == 1


def test_the_threads_table_compares_auto_with_the_best_fixed_policy():
    from benchmarks import hardware

    assert set(hardware.FIXED) < set(hardware.SETTINGS)
    runs = {label: [(100.0, 2), (120.0, 2), (110.0, 2)] for label in hardware.SETTINGS}
    runs["1 thread"] = [(200.0, 1), (190.0, 1), (250.0, 1)]  # the best fixed policy: 200
    runs["dlab threads: auto"] = [(195.0, 1), (90.0, 2), (196.0, 1)]  # picked 1 thread, twice
    rows = {r["setting"]: r for r in hardware.setting_rows(runs, "seed MLP", busy=True)}
    auto = rows["dlab threads: auto"]
    assert auto["samples_per_s"] == 195 and auto["spread"] == "90-196"
    assert auto["vs_best_fixed"] == 0.975 and auto["vs_default"] == round(195 / 110, 2)
    assert auto["threads used"] == "1/2" and auto["machine"] == "one core busy elsewhere"
    assert rows["1 thread"]["vs_best_fixed"] == 1.0


def test_the_scaling_table_measures_each_cells_own_training_memory():
    """Two cells of the scaling suite, each in its own process: a 32× larger batch of the same
    CNN keeps 32× the activations, and its training memory (the growth over the process's
    memory before the first step) shows them; parameters and steps are the cell's own."""
    from benchmarks.scaling import MIN_STEPS, build_cell, run_cell

    small, large = (run_cell("cnn", 8, batch, 0.05, "cpu") for batch in (16, 512))
    assert "error" not in small and "error" not in large, (small, large)
    assert small["parameters"] == large["parameters"] == 297_578
    # the first conv's output alone: 512 × 8 × 26 × 26 float32 = 10.6 MiB, kept for backward
    assert large["training_mib"] - small["training_mib"] > 40
    assert 0 <= small["training_mib"] < 60 and large["peak_rss_mib"] > large["training_mib"]
    assert small["steps"] >= MIN_STEPS and large["steps"] == MIN_STEPS  # 0.05 s: the least
    assert small["samples_per_s"] > 0 and large["samples_per_s"] > 0
    with pytest.raises(SystemExit, match="scaling: no model 'mlp' \\(choose from cnn, gpt\\)"):
        build_cell("mlp", 8, 16)


def test_the_cifar_record_is_met_by_the_mean_of_the_seeds_within_the_slowest_time():
    from benchmarks.cifar import summary

    def runs(accuracies, seconds):
        return [
            {"epochs": 10, "seed": s, "test_accuracy": a, "train_seconds": t, "peak_rss_mib": 900.0}
            for s, (a, t) in enumerate(zip(accuracies, seconds, strict=True))
        ]

    row = summary(runs([0.9391, 0.9412, 0.9420], [590.0, 600.0, 580.0]))
    assert row["mean_test_accuracy"] == pytest.approx(0.9408, abs=1e-4)
    assert (row["min_test_accuracy"], row["max_train_seconds"]) == (0.9391, 600.0)
    assert row["targets_met"] == "90% in 10 min, 94% in 30 min"  # one seed under 94% is allowed
    slow = summary(runs([0.95, 0.95, 0.95], [500.0, 500.0, 601.0]))
    assert slow["targets_met"] == "94% in 30 min"  # the slowest seed decides the time
    assert summary(runs([0.93, 0.94, 0.94], [100.0] * 3))["targets_met"] == "90% in 10 min"


def test_the_hand_written_fast_recipe_runs_as_a_race(monkeypatch):
    """The hand loop builds its optimizer with dlab's own parameter groups; run it on the
    packaged MNIST sample (4,000 images, 3 epochs) so that a change of their signature shows."""
    from benchmarks import speed
    from dlab.data import build
    from dlab.recipe import from_dict

    sample = from_dict({"data": {"name": "mnist_sample", "val_size": 500}, "model": "cnn"})
    monkeypatch.setattr(speed, "bundle", lambda dataset="mnist": build(sample.data, 0))
    run = speed.fast_recipe_by_hand(seed=0)
    assert run["run"] == "mnist_fast.yaml as a hand loop" and 1 <= run["epochs"] <= 3
    assert run["per_epoch_validation"][-1] > 0.5  # it learned (chance: 0.1) in 42 steps
