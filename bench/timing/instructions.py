"""Instructions per train step of steptime configurations (``cvae-bench steptime --instructions``; CPU).

Every configuration is counted in one process under callgrind (:mod:`bench.timing.callgrind`), one
torch thread, so valgrind's start-up (importing torch) is paid once: the parent writes a spec file and
runs ``valgrind ... python -m bench.timing.instructions SPEC``; the child builds each configuration's
loop exactly as the timing does (:func:`bench.timing.steptime.build_loop`), warms it up, and counts
``steps`` steps under the configuration's name. The count does not depend on the machine's load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.errors import CLIError
from bench.timing.callgrind import env_for_threads, find_valgrind, log_tail, read_counts, unsupported_reason, \
    valgrind_command

ROOT = Path(__file__).resolve().parents[2]
#: Steps counted per configuration (per-step counts of the same step agree to ~0.1 %).
COUNTED_STEPS = 10


def require_counting(device: str) -> str:
    """The valgrind executable; a one-line :class:`CLIError` when ``device``'s steps cannot be counted here."""
    if device != "cpu":
        raise CLIError("--instructions counts CPU steps only (--device cpu); on CUDA the wall clock is the measure")
    reason = unsupported_reason()
    if reason:
        raise CLIError(f"--instructions: {reason}")
    valgrind = find_valgrind()
    if valgrind is None:
        raise CLIError("--instructions needs valgrind: install it (Debian/Ubuntu: apt-get install valgrind)")
    return valgrind


def count_step_instructions(configs: list[Any], dataset: str, data_root: str | None, seed: int,
                            warmup_steps: int, steps: int = COUNTED_STEPS) -> dict[str, float]:
    """``{result name: instructions per step}`` of each CPU :class:`~bench.timing.steptime.StepTimeConfig`."""
    valgrind = ""
    for device in sorted({c.device for c in configs}):
        valgrind = require_counting(device)
    with tempfile.TemporaryDirectory(prefix="cvae-bench-instructions-") as tmp:
        out = Path(tmp)
        spec = out / "spec.json"
        spec.write_text(json.dumps({"dataset": dataset, "data_root": data_root, "seed": seed,
                                    "warmup_steps": warmup_steps, "steps": steps,
                                    "configs": [asdict(c) for c in configs]}))
        env = env_for_threads(1)
        env["PYTHONPATH"] = str(ROOT)
        proc = subprocess.run([*valgrind_command(out, valgrind), sys.executable, "-m", "bench.timing.instructions",
                               str(spec)], cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            last = [line for line in (proc.stderr or "").splitlines() if line.strip()]
            raise CLIError(f"--instructions: the counting process failed (exit {proc.returncode}): "
                           f"{(last[-1] if last else log_tail(out))[:300]}")
        names = json.loads(proc.stdout.strip().splitlines()[-1])
        counts = read_counts(out)
    missing = [n for n in names if n not in counts]
    if missing:
        raise CLIError(f"--instructions: callgrind wrote no count for {', '.join(missing)}")
    return {name: counts[name] / steps for name in names}


def _count_all(spec: dict[str, Any]) -> list[str]:
    """The child: build, warm up and count every configuration of ``spec``; their names, in order."""
    from bench.data import load_benchmark_data
    from bench.timing.callgrind import count, running_on_valgrind
    from bench.timing.steptime import StepTimeConfig, TimingOptions, build_loop, result_name
    from bench.training.presets import model_config

    if not running_on_valgrind():
        raise SystemExit("bench.timing.instructions counts under valgrind --tool=callgrind only")
    data = load_benchmark_data(spec["dataset"], spec["data_root"], seed=spec["seed"])
    options = TimingOptions(warmup_steps=spec["warmup_steps"], seed=spec["seed"])
    names = []
    for fields in spec["configs"]:
        cfg = StepTimeConfig(**fields)
        loop = build_loop(cfg, model_config(cfg.variant, data), data, options)
        loop.prepare()
        name = result_name(cfg.loop, cfg.variant, data.name, cfg.batch_size, cfg.device, cfg.mode, cfg.amp, cfg.adam)
        count(name, loop.run, spec["steps"])
        names.append(name)
        del loop
    return names


if __name__ == "__main__":
    print(json.dumps(_count_all(json.loads(Path(sys.argv[1]).read_text()))), flush=True)
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown of torch: instrumented by now, it would take a minute
