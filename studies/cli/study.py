"""``cvae-bench study``: an Optuna study of one variant, every trial an MLflow child run.

Its options are :class:`studies.spec.StudySpec`'s fields, one each (:func:`add_setting`): flag,
type, default, choices and help come from the field's declaration. ``worker`` and ``suite`` build
theirs with the same functions.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field
from typing import Any

from bench.cli.arguments import device_name
from studies.spec import Role, StudySpec, field_types, fields_of, setting_of, unwrap

#: Option parsers a setting may name (``Setting.parse``), beyond its type's.
PARSERS = {"device": device_name}
#: The option groups of the commands, by ``Setting.group``.
GROUP_TITLES = {"study": "study", "data": "data", "tracking": "tracking (MLflow)"}


def flag(f: Field, *, worker: bool = False) -> str:
    """The option of a setting: ``Setting.flag``, else ``--<name>`` (a worker names a stored setting
    after its study user attribute: ``--trials-total``)."""
    s = setting_of(f)
    name = (s.attr or f.name) if worker else f.name
    return s.flag or "--" + name.replace("_", "-")


def _turns_off(f: Field) -> bool:
    """A flag whose setting is on by default: its option (``--no-track``) turns it off."""
    return unwrap(field_types()[f.name])[0] is bool and f.default is True


def dest(f: Field) -> str:
    """Where the option of ``f`` lands in the parsed arguments: the field's name (``no_track`` for ``track``)."""
    return "no_" + f.name if _turns_off(f) else f.name


def value(args: argparse.Namespace, f: Field) -> Any:
    """The value of setting ``f`` in the parsed arguments (None: an option whose default is None, not given)."""
    given = getattr(args, dest(f))
    return not given if _turns_off(f) and given is not None else given


def add_setting(group, f: Field, *, worker: bool = False, default: Any = MISSING, phrase: str = "default") -> None:
    """Add the option of the StudySpec field ``f`` to ``group`` (read it back with :func:`value`).

    ``worker``: as ``cvae-bench worker`` has it (a defining or stored setting defaults to None, "the
    study's value"; ``Setting.worker_*`` apply). ``default`` replaces the field's (None: "not given");
    ``phrase`` is how the help names the default. A flag (a bool setting) is False when not given.
    """
    s = setting_of(f)
    if worker and s.role is not Role.LOCAL:
        default, phrase = None, "new study default"
    base, _ = unwrap(field_types()[f.name])
    help_text = s.help_text(f.default, phrase, s.worker_help if worker else None)
    kwargs: dict[str, Any] = {"dest": dest(f), "help": help_text}
    if base is bool and f.default is None:  # on, off or "decide for me": --x / --no-x / neither
        kwargs["action"] = argparse.BooleanOptionalAction
    elif base is bool:  # a flag: given, it turns the setting's default over
        kwargs["action"] = "store_true"
        if default is MISSING:
            default = False
    else:
        kwargs["type"] = PARSERS[s.parse] if s.parse else (base if base in (int, float) else None)
        if s.metavar:
            kwargs["metavar"] = s.metavar
        if s.choices:
            kwargs["choices"] = s.choices
    if worker and s.worker_required:
        kwargs["required"] = True
    else:
        kwargs["default"] = f.default if default is MISSING else default
    group.add_argument(flag(f, worker=worker), **kwargs)


def add_progress_argument(group) -> None:
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """Every StudySpec field as an option, in its group, plus ``--no-progress``."""
    for key, title in GROUP_TITLES.items():
        group = p.add_argument_group(title)
        for f in fields_of():
            if setting_of(f).group == key:
                add_setting(group, f)
        if key == "study":
            add_progress_argument(group)


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    """The StudySpec of the options (every field is an option of the same name)."""
    return StudySpec(**{f.name: value(args, f) for f in fields_of()})


def run_study_command(args: argparse.Namespace) -> int:
    from studies.runner import run_study, summary_lines

    spec = spec_from_args(args)
    print(f"cvae-bench study: {spec.name!r}: {spec.variant} on {spec.dataset}, objective {spec.objective}, "
          f"{spec.trials} finished trials wanted, {spec.epochs} epochs each, sampler {spec.sampler}, "
          f"pruner {spec.resolved_pruner}, {spec.jobs} job(s)"
          + (f", up to {spec.batch_trials} trials at once" if spec.batch_trials > 1 else ""), flush=True)
    outcome = run_study(spec, progress=not args.no_progress)
    print("\n".join(summary_lines(spec, outcome)))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "study", help="run (or resume) an Optuna study of one variant, tracked in MLflow",
        description="Search one variant's hyperparameters with Optuna. Each trial trains one configuration and is "
                    "an MLflow child run of the study's parent run; rerunning the same command resumes the study.")
    add_study_arguments(p)
    p.set_defaults(func=run_study_command)
    return p
