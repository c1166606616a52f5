"""Compare two sets of step-time measurements and flag regressions.

A *source* is one of:

- a steptime JSON (``cvae-bench steptime --json``, ``bench.timing.gpu_sweep``): ``{"results": [{"name",
  "median_ms", "normalised", ...}]}``;
- a pytest-benchmark JSON (``--benchmark-json`` / ``--benchmark-autosave``): ``{"machine_info",
  "benchmarks": [{"name", "fullname", "stats": {"median", ...}, "extra_info": {"normalised", ...}}]}``
  (``stats`` in seconds);
- an MLflow run id of the ``steptime`` experiment (metrics ``median_ms`` and ``normalised``).

Every source becomes ``{benchmark name: Measurement}``; benchmarks present on both sides are compared
on the median step time (ms) or, with ``normalised``, on the median divided by the calibration
workload measured in the same session (robust to a faster or slower machine). A change above the
threshold (in percent, slower is positive) is a regression.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import CLIError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Measurement:
    """One benchmark: median time (ms) and, when known, median / calibration median (unitless)."""

    name: str
    median_ms: float
    normalised: float | None = None


@dataclass(frozen=True)
class Source:
    label: str
    kind: str  # steptime | pytest-benchmark | mlflow
    entries: dict[str, Measurement]


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    base: float
    head: float

    @property
    def change_pct(self) -> float:
        """(head - base) / base in percent: positive means slower."""
        return (self.head - self.base) / self.base * 100.0


def parse_threshold(text: str, option: str = "--threshold") -> float:
    """``"10%"`` or ``"10"`` -> 10.0 (percent); must be >= 0. Errors name ``option``."""
    value = str(text).strip().removesuffix("%").strip()
    try:
        pct = float(value)
    except ValueError:
        raise CLIError(f"{option} {text!r}: give a percentage such as 10%") from None
    if not (pct >= 0 and math.isfinite(pct)):
        raise CLIError(f"{option} {text!r}: must be a finite percentage >= 0")
    return pct


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _positive(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def from_steptime(label: str, document: dict[str, Any]) -> Source:
    entries = {}
    for i, row in enumerate(document["results"]):
        median = _positive(row.get("median_ms")) if isinstance(row, dict) else None
        if median is None or not isinstance(row.get("name"), str):
            raise CLIError(f"{label}: results[{i}] has no name or no positive median_ms")
        entries[row["name"]] = Measurement(row["name"], median, _positive(row.get("normalised")))
    return Source(label, "steptime", entries)


def from_pytest_benchmark(label: str, document: dict[str, Any]) -> Source:
    entries = {}
    for i, bench in enumerate(document["benchmarks"]):
        stats = bench.get("stats") if isinstance(bench, dict) else None
        median = _positive(stats.get("median")) if isinstance(stats, dict) else None
        name = bench.get("fullname") or bench.get("name") if isinstance(bench, dict) else None
        if median is None or not isinstance(name, str):
            raise CLIError(f"{label}: benchmarks[{i}] has no name or no positive stats.median")
        extra = bench.get("extra_info") if isinstance(bench.get("extra_info"), dict) else {}
        entries[name] = Measurement(name, median * 1e3, _positive(extra.get("normalised")))
    return Source(label, "pytest-benchmark", entries)


def load_json_source(path: Path, label: str) -> Source:
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CLIError(f"{label}: {path} is not JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CLIError(f"{label}: cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    if isinstance(document, dict) and isinstance(document.get("results"), list):
        return from_steptime(f"{label} {path}", document)
    if isinstance(document, dict) and isinstance(document.get("benchmarks"), list):
        return from_pytest_benchmark(f"{label} {path}", document)
    raise CLIError(f"{label}: {path} is neither a steptime JSON (a 'results' list) nor a pytest-benchmark "
                   f"JSON (a 'benchmarks' list)")


def load_mlflow_source(run_id: str, label: str, tracking_uri: str | None) -> Source:
    """A steptime run: its ``benchmark`` tag (or params) name it, ``median_ms``/``normalised`` measure it."""
    from bench.timing.steptime import result_name

    try:
        from bench.tracking import make_client, redact_url, resolve_tracking_uri
        uri = resolve_tracking_uri(tracking_uri)
        client = make_client(uri)
    except ImportError as err:
        raise CLIError(f"{label}: {run_id} looks like an MLflow run id but MLflow is not importable ({err})") from None
    try:
        run = client.get_run(run_id)
    except Exception as err:  # noqa: BLE001 -- missing run, unreachable server: one line either way
        raise CLIError(f"{label}: cannot read MLflow run {run_id} at {redact_url(uri)}: "
                       f"{' '.join(str(err).split())[:200]}") from None
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    median = _positive(metrics.get("median_ms"))
    if median is None:
        raise CLIError(f"{label}: MLflow run {run_id} has no median_ms metric (not a steptime run)")
    name = tags.get("benchmark")
    if not name:
        try:
            name = result_name(params["loop"], params["variant"], params["dataset"], int(params["batch_size"]),
                               params["device"], params["mode"], params["amp"], params.get("adam", ""))
        except (KeyError, ValueError):
            raise CLIError(f"{label}: MLflow run {run_id} lacks the steptime params that name a benchmark") from None
    measurement = Measurement(name, median, _positive(metrics.get("normalised")))
    return Source(f"{label} run {run_id}", "mlflow", {name: measurement})


def load_source(spec: str, label: str, tracking_uri: str | None = None) -> Source:
    """A file path (steptime or pytest-benchmark JSON) or an MLflow run id."""
    path = Path(spec)
    if path.is_file():
        return load_json_source(path, label)
    if RUN_ID.match(spec):
        return load_mlflow_source(spec, label, tracking_uri)
    if path.exists():
        raise CLIError(f"{label}: {spec} is not a file")
    raise CLIError(f"{label}: no such file: {spec} (nor is it an MLflow run id: 32 hex digits)")


def compare(base: Source, head: Source, normalised: bool = False) -> list[ComparisonRow]:
    """Rows for the benchmarks both sources hold, on ms or on the normalised figure."""
    common = [name for name in base.entries if name in head.entries]
    if not common:
        raise CLIError(f"no common benchmarks between {base.label} ({len(base.entries)}) and "
                       f"{head.label} ({len(head.entries)})")
    rows = []
    for name in common:
        b, h = base.entries[name], head.entries[name]
        if normalised:
            missing = [s.label for s, m in ((base, b), (head, h)) if m.normalised is None]
            if missing:
                raise CLIError(f"--normalised: no normalised figure for {name} in {', '.join(missing)}")
            rows.append(ComparisonRow(name, b.normalised, h.normalised))
        else:
            rows.append(ComparisonRow(name, b.median_ms, h.median_ms))
    return rows


def regressions(rows: list[ComparisonRow], threshold_pct: float) -> list[ComparisonRow]:
    return [r for r in rows if r.change_pct > threshold_pct]


def format_comparison(rows: list[ComparisonRow], threshold_pct: float, normalised: bool) -> str:
    unit = "x calib" if normalised else "ms"
    header = ["benchmark", f"base ({unit})", f"head ({unit})", "change", "status"]
    body = []
    for r in rows:
        status = "REGRESSION" if r.change_pct > threshold_pct else "faster" if r.change_pct < -threshold_pct else "ok"
        body.append([r.name, f"{r.base:.4f}", f"{r.head:.4f}", f"{r.change_pct:+.1f}%", status])
    widths = [max(len(header[i]), *(len(row[i]) for row in body)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines += ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
              for row in body]
    return "\n".join(lines)
