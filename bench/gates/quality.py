"""Quality regression gate: train every variant briefly on ``digits`` and compare to a committed baseline.

The protocol (data set, epochs, batch size, learning rate, seed, CPU threads) is stored in the
baseline file itself, so a check always reruns exactly what produced the baseline. Training runs on
CPU with one torch thread: the numbers are then reproducible run to run (and were identical with one
and two threads when the baseline was made), and a loaded CI machine cannot slow it down by
oversubscription.

Each metric has a tolerance ``abs`` (nats) and ``rel`` (fraction of the baseline value); a value moved
when ``|current - baseline| > max(abs, rel * |baseline|)``. The check is two-sided: a KL that drops
to zero is a change in behaviour even though the ELBO may look better. The tolerances are set from the
seed-to-seed spread of the same protocol (:func:`measure_spread`) -- larger than any run-to-run or
platform difference, small enough to catch a broken objective.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any


from bench.errors import CLIError
from models.config import VARIANTS

METRICS = ("test_neg_elbo", "test_recon", "test_kl")
BASELINE_FILE = "quality_baseline.json"
DEFAULT_PROTOCOL = {"dataset": "digits", "epochs": 20, "batch_size": 64, "lr": 1e-3, "seed": 0, "threads": 1}


def default_baseline_path() -> Path:
    """The baseline shipped with the package (``bench/gates/quality_baseline.json``)."""
    return Path(str(resources.files("bench.gates").joinpath(BASELINE_FILE)))


@dataclass(frozen=True)
class Tolerance:
    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.abs, self.rel * abs(baseline))


@dataclass
class QualityBaseline:
    """The parsed baseline file: protocol, tolerances, per-variant metric values.

    ``tolerances`` holds one :class:`Tolerance` per metric; ``variant_tolerances`` may override it for a
    variant (a collapsed KL of 0.004 nats needs a tighter bound than one of 0.6).
    """

    protocol: dict[str, Any]
    tolerances: dict[str, Tolerance]
    values: dict[str, dict[str, float]]
    document: dict[str, Any]
    variant_tolerances: dict[str, dict[str, Tolerance]] = field(default_factory=dict)

    def tolerance(self, variant: str, metric: str) -> Tolerance:
        return self.variant_tolerances.get(variant, {}).get(metric, self.tolerances[metric])

    def to_document(self) -> dict[str, Any]:
        def dump(tols: dict[str, Tolerance]) -> dict[str, Any]:
            return {m: {"abs": t.abs, "rel": t.rel} for m, t in tols.items()}

        doc = {key: self.document[key] for key in ("description", "tolerance_rule") if key in self.document}
        doc["protocol"] = self.protocol
        doc["tolerances"] = dump(self.tolerances)
        if self.variant_tolerances:
            doc["variant_tolerances"] = {v: dump(t) for v, t in self.variant_tolerances.items()}
        doc["variants"] = self.values
        doc.update({k: v for k, v in self.document.items() if k not in doc})
        return doc


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_baseline(path: Path) -> QualityBaseline:
    """Parse and validate a baseline file; any problem is a one-line :class:`CLIError`."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CLIError(f"baseline file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise CLIError(f"baseline {path} is not JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise CLIError(f"baseline {path} is not JSON (not UTF-8 text)") from None
    except OSError as err:
        raise CLIError(f"cannot read baseline {path}: {err.strerror or err}") from None
    if not isinstance(document, dict):
        raise CLIError(f"baseline {path}: expected a JSON object")
    protocol = {**DEFAULT_PROTOCOL, **(document.get("protocol") or {})}
    for key, least in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("threads", 1)):
        value = protocol[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise CLIError(f"baseline {path}: protocol.{key}={value!r} must be an integer >= {least}")
    tolerances, values = {}, {}
    raw_tol = document.get("tolerances")
    if not isinstance(raw_tol, dict):
        raise CLIError(f"baseline {path}: missing 'tolerances' (per metric: {{\"abs\": nats, \"rel\": fraction}})")
    for metric in METRICS:
        tolerances[metric] = _parse_tolerance(raw_tol.get(metric), f"baseline {path}: tolerances.{metric}")
    variant_tolerances: dict[str, dict[str, Tolerance]] = {}
    raw_variant_tol = document.get("variant_tolerances") or {}
    if not isinstance(raw_variant_tol, dict):
        raise CLIError(f"baseline {path}: variant_tolerances must map variant -> metric -> tolerance")
    for variant, per_metric in raw_variant_tol.items():
        if not isinstance(per_metric, dict) or not set(per_metric) <= set(METRICS):
            raise CLIError(f"baseline {path}: variant_tolerances.{variant} must map {', '.join(METRICS)} "
                           f"to tolerances")
        variant_tolerances[variant] = {m: _parse_tolerance(t, f"baseline {path}: variant_tolerances.{variant}.{m}")
                                       for m, t in per_metric.items()}
    raw_values = document.get("variants")
    if not isinstance(raw_values, dict) or not raw_values:
        raise CLIError(f"baseline {path}: missing 'variants' (per variant: {', '.join(METRICS)})")
    for variant, metrics in raw_values.items():
        if variant not in VARIANTS:
            raise CLIError(f"baseline {path}: unknown variant {variant!r}")
        if not isinstance(metrics, dict) or not all(_finite(metrics.get(m)) for m in METRICS):
            raise CLIError(f"baseline {path}: variants.{variant} needs finite {', '.join(METRICS)}")
        values[variant] = {m: float(metrics[m]) for m in METRICS}
    return QualityBaseline(protocol, tolerances, values, document, variant_tolerances)


def _parse_tolerance(raw: Any, where: str) -> Tolerance:
    if not isinstance(raw, dict) or not all(_finite(raw.get(k, 0.0)) and raw.get(k, 0.0) >= 0 for k in ("abs", "rel")):
        raise CLIError(f"{where} must be {{\"abs\": nats >= 0, \"rel\": fraction >= 0}}")
    return Tolerance(float(raw.get("abs", 0.0)), float(raw.get("rel", 0.0)))


def train_and_evaluate(variant: str, protocol: dict[str, Any], seed: int | None = None) -> dict[str, float]:
    """Train ``variant`` by the protocol on CPU; test-split recon, KL and -ELBO (nats per example)."""
    import torch

    from bench.data import load_dataset
    from bench.evaluation import elbo_terms
    from bench.training import TrainConfig, fit, model_config, torch_threads

    seed = protocol["seed"] if seed is None else seed
    data = load_dataset(protocol["dataset"], seed=0)  # the split is fixed; only training varies with seed
    train_cfg = TrainConfig(epochs=protocol["epochs"], batch_size=protocol["batch_size"], lr=protocol["lr"],
                            seed=seed, device="cpu")
    with torch_threads(protocol["threads"]):
        result = fit(model_config(variant, data), train_cfg, data, progress=False, final_eval=False)
        torch.manual_seed(seed)  # the one-sample test ELBO draws z
        terms = elbo_terms(result.model, data.test)
    return {"test_neg_elbo": terms["neg_elbo"], "test_recon": terms["recon"], "test_kl": terms["kl"]}


def run_protocol(protocol: dict[str, Any], variants: tuple[str, ...] | list[str],
                 progress=None) -> dict[str, dict[str, float]]:
    """Metrics of each variant trained by ``protocol``; ``progress(variant)`` is called before each."""
    results = {}
    for variant in variants:
        if progress:
            progress(variant)
        results[variant] = train_and_evaluate(variant, protocol)
    return results


@dataclass(frozen=True)
class CheckRow:
    variant: str
    metric: str
    baseline: float
    current: float
    allowed: float

    @property
    def delta(self) -> float:
        return self.current - self.baseline

    @property
    def moved(self) -> bool:
        return not abs(self.delta) <= self.allowed  # NaN moves


def check(baseline: QualityBaseline, current: dict[str, dict[str, float]]) -> list[CheckRow]:
    return [CheckRow(variant, metric, baseline.values[variant][metric], current[variant][metric],
                     baseline.tolerance(variant, metric).allowed(baseline.values[variant][metric]))
            for variant in baseline.values for metric in METRICS]


def format_check(rows: list[CheckRow]) -> str:
    header = ["variant", "metric", "baseline", "current", "delta", "allowed", "status"]
    body = [[r.variant, r.metric, f"{r.baseline:.4f}", f"{r.current:.4f}", f"{r.delta:+.4f}", f"{r.allowed:.4f}",
             "MOVED" if r.moved else "ok"] for r in rows]
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) for i in range(len(header))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in [header, *body])


def measure_spread(protocol: dict[str, Any], variants, seeds: list[int], progress=None) -> dict[str, Any]:
    """Per variant and metric: values over ``seeds`` and their range (max - min), nats."""
    spread: dict[str, Any] = {"seeds": list(seeds), "range": {}}
    for variant in variants:
        runs = []
        for seed in seeds:
            if progress:
                progress(f"{variant} seed {seed}")
            runs.append(train_and_evaluate(variant, protocol, seed))
        spread["range"][variant] = {m: max(r[m] for r in runs) - min(r[m] for r in runs) for m in METRICS}
    return spread


SPREAD_FACTOR = 1.5
MIN_ABS_TOLERANCE = 0.01  # nats: below this, differences are float noise, not behaviour


def tolerances_from_spread(spread: dict[str, Any], factor: float = SPREAD_FACTOR
                           ) -> tuple[dict[str, Tolerance], dict[str, dict[str, Tolerance]]]:
    """(per metric, per variant and metric) tolerances: ``abs`` = ``factor`` x the seed-to-seed range.

    The per-metric default uses the largest range over the variants; each variant gets its own range.
    """
    def tol(width: float) -> Tolerance:
        return Tolerance(abs=round(max(MIN_ABS_TOLERANCE, factor * width), 4), rel=0.0)

    ranges = spread["range"]
    per_metric = {m: tol(max(r[m] for r in ranges.values())) for m in METRICS}
    per_variant = {v: {m: tol(r[m]) for m in METRICS} for v, r in ranges.items()}
    return per_metric, per_variant


def environment() -> dict[str, str]:
    import platform

    import torch

    return {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
