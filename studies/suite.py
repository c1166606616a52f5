"""The suite: a short study of every variant, then their best trials side by side (``cvae-bench suite``).

:class:`SuiteConfig` is derived from :class:`studies.spec.StudySpec`: its fields are the study's
settings but ``variant`` and ``study_name``, plus ``variants`` (one study each) and ``study_prefix``
(study ``<prefix>-<variant>-<dataset>``), with the suite's own defaults :data:`SUITE_DEFAULTS`. The
``--config`` file (JSON, or TOML when the name ends in ``.toml``) may set any of its fields, under
the same names; an unknown key or a value of the wrong type is a one-line :class:`CLIError`.

The summary is one row per variant (its best feasible trial, :data:`studies.feasibility`;
:data:`SUMMARY_COLUMNS`, nats per example unless named), printed as a Markdown table and logged to MLflow as a ``suite-summary`` run (the
table as CSV and Markdown, its numbers as metrics ``<variant>/<metric>``).

Nothing here imports optuna, torch, MLflow or pandas at the top: ``--help`` reads :class:`SuiteConfig`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

from bench.errors import CLIError
from bench.data import dataset_slug
from studies.spec import Role, Setting, StudySpec, expected, field_types, fits, setting_of, unwrap

DEFAULT_VARIANTS = ("cvae", "beta-cvae", "flow-cvae")
#: The suite's defaults where they differ from one study's: ``trials`` per study, ``epochs`` per trial,
#: the MLflow experiment of every study and of the summary (which is why it cannot be null here).
SUITE_DEFAULTS: dict[str, Any] = {"trials": 20, "epochs": 25, "experiment": "cvae-bench-suite"}
#: StudySpec fields the suite replaces: each study's variant and name come from these suite fields.
_REPLACED = {
    "variant": ("variants", tuple[str, ...], DEFAULT_VARIANTS,
                Setting(Role.DEFINES, "the variants, one study each", unit="variant names")),
    "study_name": ("study_prefix", str, "suite",
                   Setting(Role.LOCAL, "study names are <study_prefix>-<variant>-<dataset>")),
}

#: Columns of the summary table (one row per variant: its best feasible trial), nats per example unless named;
#: ``trial`` is the best feasible trial (-1: none), ``infeasible`` how many completed trials were left out
#: for leaving the latent unused (:mod:`studies.feasibility`); ``test_cond_std`` is pixel intensity.
SUMMARY_COLUMNS = ("variant", "trial", "val_neg_elbo", "test_neg_elbo", "test_iw_nll", "test_recon", "test_kl",
                   "test_active_units", "test_cond_acc", "test_cond_std", "samples_per_s", "finished", "infeasible",
                   "study", "model_uri")


def _suite_fields() -> Iterator[tuple[str, Any, dataclasses.Field]]:
    hints = field_types(StudySpec)
    for f in dataclasses.fields(StudySpec):
        if f.name in _REPLACED:
            name, hint, default, setting = _REPLACED[f.name]
            yield name, hint, dataclasses.field(default=default, metadata={"setting": setting})
            continue
        hint, default = hints[f.name], SUITE_DEFAULTS.get(f.name, f.default)
        if f.name in SUITE_DEFAULTS and SUITE_DEFAULTS[f.name] is not None:
            hint = _required(hint)
        yield f.name, hint, dataclasses.field(default=default, metadata=f.metadata)


def _required(hint: Any) -> Any:
    """``T | None`` -> ``T``: a setting the suite gives a value must keep one."""
    return unwrap(hint)[0]


class _Suite:
    """The behaviour of :class:`SuiteConfig` (its fields are derived from StudySpec's)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise CLIError(f"variants={list(self.variants)!r}: give one or more distinct variants")

    def study_specs(self) -> list[StudySpec]:
        """One :class:`StudySpec` per variant (validated there: a bad value is a one-line error)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("variants", "study_prefix")}
        return [StudySpec(variant=v, study_name=f"{self.study_prefix}-{v}-{dataset_slug(self.dataset)}", **shared)
                for v in self.variants]


SuiteConfig = dataclasses.make_dataclass(
    "SuiteConfig", list(_suite_fields()), bases=(_Suite,), frozen=True, kw_only=True,
    namespace={"__doc__": "What the suite runs; every field may be set in the ``--config`` file (same names)."})
SuiteConfig.__module__ = __name__


def config_keys() -> list[str]:
    """The keys a ``--config`` file may hold: the fields of :class:`SuiteConfig`, in order."""
    return [f.name for f in dataclasses.fields(SuiteConfig)]


def load_config(path: str) -> SuiteConfig:
    """Read a JSON/TOML suite config; unknown keys and wrong types are one-line :class:`CLIError` s."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise CLIError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CLIError(f"--config {path}: cannot read it (not UTF-8 text)") from None
    try:
        if file.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise CLIError(f"--config {path}: TOML needs Python 3.11 or newer; use a JSON file") from None
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise CLIError(f"--config {path}: not valid {'TOML' if file.suffix == '.toml' else 'JSON'} ({exc})") from None
    if not isinstance(raw, dict):
        raise CLIError(f"--config {path}: must hold one object/table of settings")
    allowed = config_keys()
    for key in raw:
        if key not in allowed:
            raise CLIError(f"--config {path}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    hints = field_types(SuiteConfig)
    units = {f.name: setting_of(f).unit for f in dataclasses.fields(SuiteConfig)}
    for key, value in raw.items():
        if not fits(hints[key], value):
            raise CLIError(f"--config {path}: {key}={value!r} must be {expected(hints[key], units[key])}")
    return SuiteConfig(**raw)


def summary_row(spec: StudySpec, outcome) -> dict[str, Any]:
    """The best feasible trial of one study as a table row (NaN where no trial is feasible)."""
    from studies.feasibility import best_trial, completed

    best = best_trial(outcome.study, spec.objective_names)
    counts = outcome.counts
    row: dict[str, Any] = {"variant": spec.variant, "study": spec.name,
                           "finished": counts.get("COMPLETE", 0) + counts.get("PRUNED", 0),
                           "infeasible": len(completed(outcome.study)[1])}
    attrs = best.user_attrs if best is not None else {}
    row["trial"] = best.number if best is not None else -1
    registration = getattr(outcome, "registration", None)
    row["model_uri"] = registration.uri(best.number) if registration is not None and best is not None else ""
    for col in SUMMARY_COLUMNS:
        if col not in row:
            row[col] = float(attrs.get(col, float("nan")))
    row["mlflow_run_id"] = attrs.get("mlflow_run_id", "")
    row["model_link"] = ""
    if row["model_uri"]:
        from bench.tracking import resolve_tracking_uri
        from bench.tracking.ui_links import registered_model_link

        row["model_link"] = registered_model_link(resolve_tracking_uri(spec.tracking_uri), registration.name,
                                                  registration.versions[best.number])
    return row


def collapse_notes(frame) -> list[str]:
    """``variant: <note>`` for each variant without a feasible trial, or whose best trial has collapsed on the
    test split all the same (see :func:`bench.collapse_note`)."""
    from bench import collapse_note

    notes = []
    for row in frame.to_dict("records"):
        if row["trial"] < 0:
            notes.append(f"{row['variant']}: no feasible trial ({row.get('infeasible', 0)} completed trials left "
                         "the latent unused): nothing selected or registered")
            continue
        note = collapse_note(row)
        if note:
            notes.append(f"{row['variant']} (trial {row['trial']}): {note}")
    return notes


def format_table(frame) -> str:
    """A Markdown table of the summary (numbers to 3 decimals; samples/s and active units as integers)."""
    cols = list(frame.columns)
    def cell(col: str, value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if col in ("samples_per_s", "test_active_units") else f"{value:.3f}"
        return str(value)
    rows = [[cell(c, v) for c, v in zip(cols, rec)] for rec in frame.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(x.rjust(w) for x, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def log_summary(writer: Any, config: SuiteConfig, frame, table: str) -> str:
    """A ``suite-summary`` run in the suite's experiment: the table (CSV, Markdown) and its numbers, written by
    ``writer`` (a :class:`bench.tracking.TrackingWriter`). Returns the run's (local, until known) id."""
    with writer.start_run(config.experiment, "suite-summary",
                          tags={"run_kind": "suite", "dataset": config.dataset}) as run:
        run.log_params({"dataset": config.dataset, "variants": ",".join(config.variants), "trials": config.trials,
                        "epochs": config.epochs, "objective": config.objective})
        metrics = {f"{row['variant']}/{col}": float(row[col]) for row in frame.to_dict("records")
                   for col in SUMMARY_COLUMNS  # numbers (trial, finished and infeasible counts too), NaN left out
                   if isinstance(row[col], (int, float)) and not isinstance(row[col], bool) and row[col] == row[col]}
        run.log_metrics(metrics)
        run.log_text(frame.to_csv(index=False), "suite_summary.csv")
        run.log_text(table + "\n", "suite_summary.md")
    return run
