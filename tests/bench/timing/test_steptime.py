"""One configuration measured end to end, its FLOPs and name, the steptime command and the GPU sweep script.

The block timer and the loops have their own test modules (test_block_timer.py, test_loops.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.data import synthetic_splits
from bench.timing.report import add_speedups
from bench.timing.steptime import (
    StepTimeConfig,
    StepTimeResult,
    TimingOptions,
    count_step_flops,
    measure,
    measure_group,
    result_name,
)
from models.config import ConfigError
from studies.cli import main

ROOT = Path(__file__).resolve().parents[3]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = TimingOptions(repeats=2, steps_per_block=2, warmup_steps=1)


# -- FLOPs ----------------------------------------------------------------------------------------


def test_flop_count_of_the_seed_preset_matches_the_layer_arithmetic(digits):
    from bench.training.presets import model_config

    b = 64
    # seed preset on digits: encoder (64+10 -> 128), posterior (128 -> 2*32), decoder (32+10 -> 128 -> 64)
    layers = [(74, 128), (128, 64), (42, 128), (128, 64)]
    forward = sum(2 * b * i * o for i, o in layers)
    # backward: grad of every weight, grad of every input except the data's (the first layer's input)
    expected = forward + forward + (forward - 2 * b * 74 * 128)
    assert count_step_flops(model_config("cvae", digits), b, "cpu") == expected


# -- one configuration ----------------------------------------------------------------------------


def test_measure_reports_every_field_and_the_speedup_over_the_seed_loop(digits):
    results = [measure(StepTimeConfig("cvae", 32, "cpu", loop="seed-loop"), digits, TINY),
               measure(StepTimeConfig("cvae", 32, "cpu"), digits, TINY)]
    add_speedups(results)
    seed, harness = results
    for r in results:
        assert r.median_ms > 0 and r.iqr_ms >= 0 and r.q25_ms <= r.median_ms <= r.q75_ms
        assert r.samples_per_s == pytest.approx(32 / (r.median_ms / 1e3))
        assert r.peak_mem_mb > 0 and r.peak_mem_source == "process_peak_rss"
        assert r.flops_per_step > 0 and r.tflops > 0
        assert r.steps_per_block == 2 and len(r.block_times_ms) == 2
        assert torch.isfinite(torch.tensor(r.final_loss))
    assert seed.speedup == pytest.approx(1.0)
    assert harness.speedup == pytest.approx(harness.samples_per_s / seed.samples_per_s)
    assert harness.name == "harness:cvae/digits/b32/cpu/eager/fp32"


def test_config_validation():
    with pytest.raises(ConfigError, match="cuda_graphs needs device cuda"):
        StepTimeConfig("cvae", 64, "cpu", cuda_graphs=True)
    with pytest.raises(ConfigError, match="seed-loop"):
        StepTimeConfig("cvae", 64, "cpu", compile=True, loop="seed-loop")
    with pytest.raises(ConfigError, match="batch_size"):
        StepTimeConfig("cvae", 0, "cpu")
    assert StepTimeConfig("cvae", 64, "cpu", compile=True).mode == "compile"
    with pytest.raises(ConfigError, match="adam"):
        StepTimeConfig("cvae", 64, "cpu", adam="sgd")
    with pytest.raises(ConfigError, match="seed-loop"):
        StepTimeConfig("cvae", 64, "cpu", loop="seed-loop", adam="fused")


def test_adam_implementation_per_loop_and_in_the_name():
    """The harness runs fused Adam, the seed loop the article's ``optim.Adam``; names say the exception."""
    assert StepTimeConfig("cvae", 64, "cpu").adam == "fused"
    assert StepTimeConfig("cvae", 64, "cpu", loop="floor").adam == "fused"
    assert StepTimeConfig("cvae", 64, "cpu", loop="seed-loop").adam == "default"
    assert result_name("harness", "cvae", "digits", 64, "cpu", "eager", "none", "fused") == \
        "harness:cvae/digits/b64/cpu/eager/fp32"
    assert result_name("harness", "cvae", "digits", 64, "cpu", "eager", "none", "default") == \
        "harness:cvae/digits/b64/cpu/eager/fp32/adam-default"
    assert result_name("seed-loop", "cvae", "digits", 64, "cpu", "eager", "none", "default") == \
        "seed-loop:cvae/digits/b64/cpu/eager/fp32"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_fused_adam_takes_the_same_steps_as_torchs_default_adam(digits, device):
    from bench.training.presets import model_config
    from bench.training.step import make_optimizer, make_train_step
    from models import CVAE

    dev = torch.device(device)
    x, y = digits.train.x[:64].to(dev), digits.train.y[:64].to(dev)
    weight = torch.tensor([1.0, 1.0], device=dev)
    params = {}
    for implementation in ("default", "fused"):
        torch.manual_seed(0)
        model = CVAE(model_config("flow-cvae", digits)).to(dev)
        optimizer = make_optimizer(model, 1e-2, weight_decay=1e-4, implementation=implementation)
        assert optimizer.param_groups[0]["fused"] is (True if implementation == "fused" else None)
        step = make_train_step(model, optimizer)
        for _ in range(5):
            torch.manual_seed(1)  # the same reparameterisation noise for both
            step(x, y, weight)
        params[implementation] = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
    moved = (params["default"] - params["fused"]).abs().max()
    assert moved < 1e-4
    torch.manual_seed(0)
    untrained = torch.cat([p.detach().flatten() for p in CVAE(model_config("flow-cvae", digits)).parameters()])
    assert (params["fused"] - untrained).abs().max() > 1e-2  # five steps at lr 1e-2 did move the weights


def test_make_optimizer_rejects_an_unknown_implementation(digits):
    from bench.training.presets import model_config
    from bench.training.step import make_optimizer
    from models import CVAE

    with pytest.raises(ValueError, match="implementation='sgd'"):
        make_optimizer(CVAE(model_config("cvae", digits)), 1e-3, implementation="sgd")


# -- the command ----------------------------------------------------------------------------------


def test_steptime_command_writes_json_with_the_seed_loop_column(tmp_path, capsys):
    out = tmp_path / "steptime.json"
    code = main(["steptime", "--variant", "cvae,flow-cvae", "--batch-size", "32", "--device", "cpu",
                 "--baseline", "seed-loop", "--repeats", "2", "--steps-per-block", "2", "--warmup", "1",
                 "--json", str(out), "--no-track"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "seed-loop" in printed
    doc = json.loads(out.read_text())
    assert {"machine", "calibration", "results"} <= set(doc)
    assert doc["calibration"]["cpu"]["median_ms"] > 0
    assert len(doc["results"]) == 4
    fields = {"variant", "dataset", "batch_size", "device", "compile", "amp", "cuda_graphs", "median_ms", "iqr_ms",
              "samples_per_s", "peak_mem_mb", "tflops", "speedup", "normalised", "loop", "name"}
    for row in doc["results"]:
        assert fields <= set(row)
        assert row["normalised"] == pytest.approx(row["median_ms"] / doc["calibration"]["cpu"]["median_ms"])
    harness = [r for r in doc["results"] if r["loop"] == "harness"]
    assert {r["variant"] for r in harness} == {"cvae", "flow-cvae"}
    assert all(r["speedup"] > 0 for r in harness)


def test_seed_loop_blocks_interleave_with_the_harness_so_a_load_burst_moves_both(tmp_path, capsys, monkeypatch):
    """A burst of load over the first half of the session: interleaved, the speedup still holds (2x)."""
    import bench.timing.steptime as steptime
    from bench.timing.block_timer import BlockTimes
    from bench.timing.loops import SeedLoop

    repeats, blocks = 10, []

    def loaded_clock(run_block, steps, repeats_here, device, prepare=None):
        """Each block: the seed loop 2 ms/step, the harness 1 ms/step, x5 during the first half."""
        per_step = []
        for _ in range(repeats_here):
            seed = isinstance(run_block.__self__, SeedLoop)
            blocks.append("seed" if seed else "harness")
            burst = 5.0 if len(blocks) <= repeats else 1.0
            per_step.append((2.0 if seed else 1.0) * burst)
        return BlockTimes(tuple(per_step), steps)

    monkeypatch.setattr(steptime, "time_blocks", loaded_clock)
    out = tmp_path / "steptime.json"
    code = main(["steptime", "--variant", "cvae", "--batch-size", "32", "--device", "cpu", "--baseline", "seed-loop",
                 "--repeats", str(repeats), "--steps-per-block", "2", "--warmup", "1", "--json", str(out),
                 "--no-track"])
    assert code == 0
    assert "(blocks interleaved)" in capsys.readouterr().out
    assert blocks[:4] == ["seed", "harness", "harness", "seed"]  # one block each in turn, the order flipped
    rows = {r["loop"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["harness"]["speedup"] == pytest.approx(2.0)  # one after the other it would read 10x
    assert rows["seed-loop"]["median_ms"] == pytest.approx(6.0) and rows["harness"]["median_ms"] == pytest.approx(3.0)


def test_measure_group_keeps_each_configurations_own_blocks(digits):
    seed, harness = measure_group([StepTimeConfig("cvae", 32, "cpu", loop="seed-loop"),
                                   StepTimeConfig("cvae", 32, "cpu")], digits,
                                  TimingOptions(repeats=3, steps_per_block=2, warmup_steps=1))
    assert (seed.loop, harness.loop) == ("seed-loop", "harness")
    for r in (seed, harness):
        assert len(r.block_times_ms) == 3 and r.steps_per_block == 2 and r.median_ms > 0
    with pytest.raises(ConfigError, match="one device"):
        measure_group([StepTimeConfig("cvae", 32, "cpu"), StepTimeConfig("cvae", 32, "cuda")], digits)


def test_instructions_need_the_cpu():
    from bench.errors import CLIError
    from bench.timing.instructions import require_counting

    with pytest.raises(CLIError, match="CPU steps only"):
        require_counting("cuda")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed (Debian: apt-get install valgrind; .ci/run installs it)")
def test_steptime_instructions_sit_beside_the_wall_clock_in_the_json(tmp_path, capsys):
    """One valgrind process counts every row (this test pays its start-up: torch imported under valgrind;
    synthetic data spares it scikit-learn's import)."""
    out = tmp_path / "steptime.json"
    code = main(["steptime", "--variant", "cvae", "--dataset", "synthetic:8x8", "--batch-size", "32", "--device", "cpu",
                 "--baseline", "seed-loop",
                 "--repeats", "2", "--steps-per-block", "2", "--warmup", "1", "--instructions", "--json", str(out),
                 "--no-track"])
    assert code == 0
    assert "instr_per_step" in capsys.readouterr().out
    rows = {r["loop"]: r for r in json.loads(out.read_text())["results"]}
    for r in rows.values():
        assert r["median_ms"] > 0 and 1e5 < r["instructions_per_step"] < 1e9
    # the seed loop collates its batch sample by sample and runs the unfused Adam: more work per step
    assert rows["seed-loop"]["instructions_per_step"] > rows["harness"]["instructions_per_step"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu", "--cuda-graphs"], "cuda_graphs needs device cuda"),
    (["--variant", "vae"], "variant='vae'"),
    (["--dataset", "synthetic:28"], "synthetic:HxW"),
    (["--device", "cpu", "--repeats", "0"], "repeats=0"),
    (["--device", "cpu", "--threads", "0"], "--threads: 0 threads: must be >= 1"),
    (["--device", "cpu", "--block-ms", "nan"], "--block-ms nan: must be a finite number of milliseconds > 0"),
    (["--device", "cpu", "--block-ms", "0"], "--block-ms 0.0: must be a finite"),
    (["--device", "cpu", "--json", "/dev/null/steptime.json"], "--json /dev/null/steptime.json: cannot write it"),
    (["--device", "cuda:99"], "device='cuda:99'"),  # no CUDA here, or fewer than 100 devices
])
def test_steptime_command_bad_input_is_one_line_exit_2(argv, message, capsys):
    try:
        code = main(["steptime", "--no-track", *argv])
    except SystemExit as exc:  # argparse's own errors (a bad --threads)
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert "calibration" not in out  # rejected before anything was timed


@pytest.mark.slow
def test_steptime_command_logs_one_mlflow_run_per_configuration(tmp_path, capsys):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["steptime", "--batch-size", "16,32", "--device", "cpu", "--baseline", "seed-loop",
                 "--repeats", "2", "--steps-per-block", "2", "--warmup", "1", "--tracking-uri", uri])
    assert code == 0
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("steptime")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    names = {r.data.tags["benchmark"] for r in runs}
    assert "harness:cvae/digits/b32/cpu/eager/fp32" in names
    harness = next(r for r in runs if r.data.tags["benchmark"] == "harness:cvae/digits/b16/cpu/eager/fp32")
    assert {"median_ms", "samples_per_s", "peak_mem_mb", "tflops", "speedup", "normalised"} <= set(harness.data.metrics)
    assert harness.data.params["batch_size"] == "16" and harness.info.status == "FINISHED"


BLOCK_TRACKING = ("import sys; sys.modules['mlflow'] = None; sys.modules['optuna'] = None; "
                  "import runpy; runpy.run_module({module!r}, run_name='__main__')")


def run_without_tracking_packages(module: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` with mlflow and optuna made unimportable (as on the GPU machine)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK_TRACKING.format(module=module), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_steptime_module_runs_without_mlflow(tmp_path):
    out = tmp_path / "s.json"
    proc = run_without_tracking_packages("bench.cli.steptime", [
        "--dataset", "synthetic:28x28", "--batch-size", "16", "--device", "cpu", "--repeats", "2",
        "--steps-per-block", "2", "--warmup", "1", "--no-track", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["results"][0]["dataset"] == "synthetic:28x28"
    tracked = run_without_tracking_packages("bench.cli.steptime", ["--device", "cpu", "--repeats", "1",
                                                                       "--steps-per-block", "1", "--warmup", "1"])
    assert tracked.returncode == 2 and "--no-track" in tracked.stderr


def test_steptime_help_needs_no_torch():
    """``--help`` imports only torch-free modules: it works even where torch cannot be imported."""
    block_torch = ("import sys; sys.modules['torch'] = None; sys.argv[1:] = ['--help']; "
                   "import runpy; runpy.run_module('bench.cli.steptime', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", block_torch], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--adam {fused,default}" in proc.stdout and "--baseline {seed-loop}" in proc.stdout


def test_adam_choices_of_the_command_are_the_train_steps():
    from bench.cli.steptime import ADAM_CHOICES
    from bench.training.step import ADAM_IMPLEMENTATIONS

    assert ADAM_CHOICES == ADAM_IMPLEMENTATIONS


@pytest.mark.slow
@pytest.mark.parametrize("old, new", [("bench.gpu_sweep", "bench.timing.gpu_sweep"),
                                      ("bench.tracking_overhead", "bench.timing.tracking_overhead")])
def test_old_script_names_forward_to_the_timing_package(old, new):
    proc = run_without_tracking_packages(old, ["--help"])
    assert proc.returncode == 0, proc.stderr
    assert f"usage: python -m {new}" in proc.stdout


@pytest.mark.slow
def test_gpu_sweep_quick_on_cpu_writes_json_and_markdown(tmp_path):
    proc = run_without_tracking_packages("bench.timing.gpu_sweep", ["--out", str(tmp_path), "--device", "cpu", "--quick"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "sweep.json").read_text())
    loops = {(r["loop"], r["variant"]) for r in doc["results"]}
    assert {("seed-loop", "cvae"), ("harness", "cvae"), ("floor", "cvae"), ("harness", "flow-cvae")} <= loops
    adams = {(r["loop"], r["variant"], r["adam"]) for r in doc["results"]}
    assert {("seed-loop", "cvae", "default"), ("harness", "cvae", "fused"), ("harness", "cvae", "default"),
            ("harness", "flow-cvae", "fused")} <= adams
    assert ("harness", "flow-cvae", "default") not in adams  # the contrast row is the seed preset's only
    assert "synthetic" in doc["sweep"]["data"]  # no MNIST files in CI: synthetic 28x28, said so
    assert all(r["dataset"] == "synthetic:28x28" for r in doc["results"])
    gaps = {g["variant"]: g for g in doc["sweep"]["floor_gaps"]}
    assert gaps["cvae"]["best_over_floor"] > 0 and gaps["cvae"]["speedup_vs_seed_loop"] > 0
    assert doc["sweep"]["failed"] == [] and doc["sweep"]["skipped"] == []
    markdown = (tmp_path / "sweep.md").read_text()
    assert "floor" in markdown and "| harness | cvae |" in markdown
    floors = {(r["variant"], r["compile"], r["cuda_graphs"], r["amp"], r["adam"]) for r in doc["results"]
              if r["loop"] == "floor"}
    for r in doc["results"]:
        if r["loop"] == "harness":  # every harness row has its floor, timed in the same setting
            assert (r["variant"], r["compile"], r["cuda_graphs"], r["amp"], r["adam"]) in floors, r["name"]
    trial = doc["sweep"]["whole_trial"]
    assert trial["quick"] and "scaled down" in trial["note"] and trial["dataset"] == "synthetic:8x8"
    assert trial["steps"] == trial["epochs"] * (trial["n_train"] // 64) and trial["mode"] == "eager"
    assert 0 < trial["steps_s"] <= trial["epoch_loops_s"] < trial["wall_s"]
    assert trial["outside_steps_share"] == pytest.approx((trial["wall_s"] - trial["steps_s"]) / trial["wall_s"])
    assert "## Whole trial" in markdown and "scaled down" in markdown


def _result(loop: str, median_ms: float, **settings) -> StepTimeResult:
    cfg = StepTimeConfig("cvae", 64, "cuda", loop=loop, **settings)
    return StepTimeResult(variant="cvae", dataset="d", batch_size=64, device="cuda", device_name="gpu", loop=loop,
                          mode=cfg.mode, compile=cfg.compile, amp=cfg.amp, cuda_graphs=cfg.cuda_graphs, adam=cfg.adam,
                          median_ms=median_ms, iqr_ms=0.0, q25_ms=median_ms, q75_ms=median_ms, samples_per_s=1.0,
                          peak_mem_mb=1.0, peak_mem_source="x", flops_per_step=1, tflops=1.0, steps_per_block=1,
                          repeats=1)


def test_floor_gap_compares_the_best_setting_with_its_own_floor():
    from bench.timing.gpu_sweep import floor_gaps

    results = [_result("floor", 0.10, cuda_graphs=True), _result("harness", 0.50),
               _result("harness", 0.20, cuda_graphs=True),
               _result("floor", 0.05, compile=True, cuda_graphs=True, amp="bf16"),
               _result("harness", 0.08, compile=True, cuda_graphs=True, amp="bf16")]
    (gap,) = floor_gaps(results)
    assert (gap["best_mode"], gap["best_amp"], gap["floor_mode"]) == ("compile+cuda-graphs", "bf16",
                                                                      "compile+cuda-graphs")
    assert gap["floor_ms"] == 0.05 and gap["best_over_floor"] == pytest.approx(0.08 / 0.05)
    (gap,) = floor_gaps(results[:3] + results[4:])  # its floor not timed (budget, failure): no ratio
    assert gap["floor_ms"] is None and gap["best_over_floor"] is None


def test_full_cuda_sweep_times_a_floor_before_each_harness_row():
    from bench.timing.gpu_sweep import make_plan, settings, sweep_configs

    configs = sweep_configs(make_plan("cuda", quick=False, compile=None), "cuda")
    harness = [i for i, c in enumerate(configs) if c.loop == "harness"]
    assert len(harness) > 40 and any(configs[i].compile and configs[i].cuda_graphs for i in harness)
    for i in harness:
        floor = configs[i - 1]
        assert floor.loop == "floor" and settings(floor) == settings(configs[i])
        assert (floor.variant, floor.batch_size) == (configs[i].variant, configs[i].batch_size)
    assert sum(c.loop == "floor" for c in configs) == len(harness)


# -- CUDA (skipped without a GPU; run them on a GPU machine) -------------------------------------


@needs_cuda
@pytest.mark.parametrize("compile, cuda_graphs, amp", [
    (False, False, "none"), (False, True, "none"), (False, True, "bf16"), (True, False, "none"), (True, True, "bf16"),
])
def test_cuda_modes_measure(compile, cuda_graphs, amp):
    data = synthetic_splits((1, 28, 28), 10, n=4096)
    result = measure(StepTimeConfig("cvae", 64, "cuda", compile=compile, cuda_graphs=cuda_graphs, amp=amp), data,
                     TimingOptions(repeats=3, block_ms=10.0))
    assert result.median_ms > 0 and result.tflops > 0
    assert result.peak_mem_source == "cuda_max_memory_allocated" and result.peak_mem_mb > 0
    assert result.device_name == torch.cuda.get_device_name()
    assert torch.isfinite(torch.tensor(result.final_loss))
