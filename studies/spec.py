"""The settings of one study, declared once: :class:`StudySpec`.

Each field of :class:`StudySpec` is one setting. Its default and type are the field's; its
:class:`Setting` (``field.metadata["setting"]``) says the rest: help text, unit, allowed values, bound,
command-line flag, and its :class:`Role`:

- ``defines``: what the trials mean (variant, dataset, objective, epochs, and the data they train on:
  seed, limit, image size). Kept in the study's user attributes when the study is made; a rerun or a
  worker that disagrees is refused (a worker that does not name one gets the stored value).
- ``stored``: kept in the study's user attributes when the study is made, so that a worker joining
  with only ``--study-name`` and ``--storage`` runs the same study (sampler, pruner, iw_samples, ...;
  ``trials`` as ``trials_total``, rewritten by every invocation).
- ``local``: this invocation only (storage, jobs, device, threads, ...).

Everything else is derived from it: the options of ``cvae-bench study`` and ``cvae-bench worker``
(:mod:`studies.cli`), the suite's settings and config keys (:class:`studies.suite.SuiteConfig`), the
study user attributes (:func:`study_attrs`, :func:`settings_from_attrs`).

This module imports neither optuna, torch nor MLflow at the top: the command line imports it to build
``--help``. Constructing a :class:`StudySpec` resolves its device, which imports torch.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from dataclasses import Field, dataclass, field, fields
from enum import Enum
from typing import Any, Mapping

from bench.data.memory import MAX_SEED
from bench.data.names import dataset_slug
from models.config import ConfigError
from studies.storage import DEFAULT_HEARTBEAT_S, DEFAULT_STORAGE, check_url

#: The objectives a study may minimise, each with the names of its values (nats per example).
OBJECTIVES = {"neg-elbo": ("val_neg_elbo",), "rate-distortion": ("val_recon", "val_kl")}
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "nsga2", "random")
#: Epochs between a trial's checkpoints. A trial of a study is short (digits: 10 epochs, well under a
#: second each), and a lost worker's retry resumes from its last one; ``train`` counts time instead
#: (bench.cli.arguments.DEFAULT_TRAIN_CHECKPOINT_EVERY).
DEFAULT_CHECKPOINT_EVERY = 5


class Role(str, Enum):
    """What a setting is to a study (see the module docstring)."""

    DEFINES = "defines"
    STORED = "stored"
    LOCAL = "local"


@dataclass(frozen=True)
class Setting:
    """Everything about one setting besides its name, type and default.

    ``help`` is the help text, ``{default}`` marking where the default is named: the command
    renders it ``default <default_text>`` (``default_text`` None: the default itself; starting with
    ``:``, glued on: ``default: no limit``). ``unit`` is what a number counts (``seconds``, ``examples``)
    or what a list holds. ``bound`` is ``(">=", 1)`` or ``(">", 0)`` for numbers;
    ``choices`` the allowed values (also the options' choices). ``attr`` names the study user attribute
    of a defining or stored setting (default: its own name); ``rewrite``: every invocation writes it,
    not only the first. ``parse`` names a special option parser (``"device"``). The ``worker_*``
    fields say how ``cvae-bench worker`` shows the setting where it differs from ``study``.
    """

    role: Role
    help: str
    group: str = "study"  # the option group: "study", "data" or "tracking"
    default_text: str | None = None
    unit: str | None = None
    choices: tuple[str, ...] | None = None
    bound: tuple[str, float] | None = None
    metavar: str | None = None
    flag: str | None = None
    parse: str | None = None
    attr: str | None = None
    rewrite: bool = False
    worker_help: str | None = None
    worker_required: bool = False
    worker_group: str | None = None

    def help_text(self, default: Any, phrase: str = "default", text: str | None = None) -> str:
        """``help`` (or ``text``) with ``{default}`` filled in: ``phrase`` then the default (``phrase``
        e.g. ``new study default`` for a worker)."""
        shown = str(default) if self.default_text is None else self.default_text
        if shown and not shown.startswith(":"):
            shown = " " + shown
        return (text or self.help).format(default=phrase + shown)


def setting(default: Any, role: Role, help: str, **options: Any) -> Any:
    """A :class:`StudySpec` field: its default and its :class:`Setting`."""
    return field(default=default, metadata={"setting": Setting(role, help, **options)})


_BOUNDS = {">=": operator.ge, ">": operator.gt}


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    """One study, validated on construction (:class:`ConfigError` naming the field and its value).

    Each field's help says what it means and what a None stands for (``pruner=None``: median for
    neg-elbo, none for rate-distortion; ``study_name=None``: ``<variant>-<dataset>-<objective>``;
    ``experiment=None``: the study name); numbers are in the field's ``unit`` (``timeout`` and
    ``heartbeat`` in seconds). The fields are in the order the ``study`` command lists its options.
    """

    variant: str = setting("cvae", Role.DEFINES, "cvae, beta-cvae or flow-cvae ({default})")
    trials: int = setting(
        20, Role.STORED, "finished (complete or pruned) trials wanted in total; a rerun runs only the missing ones "
                         "({default})", bound=(">=", 1), metavar="N", attr="trials_total", rewrite=True,
        worker_help="finished (complete or pruned) trials wanted in the study, all workers together "
                    "(default: the study's stored total; required to create a study)", worker_group="shared study")
    epochs: int = setting(10, Role.DEFINES, "epochs per trial ({default})", bound=(">=", 1))
    storage: str = setting(
        DEFAULT_STORAGE, Role.LOCAL, "Optuna storage: an RDB URL ({default}; postgresql://user:pw@host/db) or a "
                                     "journal file ending in .journal; optuna-dashboard opens either", metavar="URL",
        worker_help="Optuna storage every worker reaches, e.g. postgresql://user:pw@db-host/optuna",
        worker_required=True, worker_group="shared study")
    study_name: str | None = setting(
        None, Role.LOCAL, "{default}; the same name resumes the study", default_text="<variant>-<dataset>-<objective>",
        metavar="NAME", worker_help="the study all workers share", worker_required=True, worker_group="shared study")
    objective: str = setting(
        "neg-elbo", Role.DEFINES, "neg-elbo: minimise val -ELBO with pruning; rate-distortion: minimise "
                                  "(val_recon, val_kl), a Pareto front ({default})", choices=tuple(OBJECTIVES))
    pruner: str | None = setting(None, Role.STORED, "{default}", default_text="median for neg-elbo, none for "
                                 "rate-distortion", choices=PRUNERS)
    sampler: str = setting("tpe", Role.STORED, "{default}", choices=SAMPLERS)
    timeout: float | None = setting(None, Role.LOCAL, "start no trial after S seconds ({default})",
                                    default_text=": no limit", unit="seconds", bound=(">", 0), metavar="S")
    jobs: int = setting(1, Role.LOCAL, "trials run side by side in threads ({default})", bound=(">=", 1), metavar="J",
                        worker_help="trials this worker runs side by side ({default})")
    batch_trials: int = setting(
        1, Role.LOCAL, "ask up to K trials at once and train those whose models share their shapes as one vmapped "
                       "model; the batch's first trial samples latent size, hidden layers, flow and batch size, the "
                       "others take its values ({default}: one at a time)", bound=(">=", 1), metavar="K")
    seed: int = setting(0, Role.DEFINES, "seed of the data split, the models and the sampler ({default})",
                        bound=(">=", 0))
    device: str = setting("auto", Role.LOCAL, "auto ({default}: cuda if present), cpu, cuda or cuda:N",
                          default_text="", metavar="DEVICE", parse="device")
    iw_samples: int = setting(100, Role.STORED, "k of the importance-weighted test bound ({default})",
                              bound=(">=", 1))
    cuda_graphs: bool | None = setting(None, Role.LOCAL, "capture each train step with fused Adam in one CUDA graph "
                                       "({default})", default_text=": on with CUDA, off on CPU")
    compile: bool = setting(False, Role.LOCAL, "torch.compile the forward and loss")
    amp: str = setting("none", Role.LOCAL, "bf16 autocast ({default})", choices=("none", "bf16"))
    heartbeat: int = setting(
        DEFAULT_HEARTBEAT_S, Role.LOCAL, "RDB storages: a running trial beats every S seconds; one silent for 2*S "
                                         "(its process was killed) is failed and retried ({default})",
        unit="seconds", bound=(">=", 1), metavar="S",
        worker_help="a running trial beats every S seconds; one silent for 2*S is failed and retried by another "
                    "worker ({default}; use the same value on every worker)")
    checkpoint_every: int = setting(
        DEFAULT_CHECKPOINT_EVERY, Role.LOCAL, "save a trial's training state every N epochs, so a retry of a trial "
        "whose worker was lost resumes there; 0: never ({default})", bound=(">=", 0), metavar="N", unit="epochs")
    keep_checkpoints: bool = setting(False, Role.LOCAL, "keep the local checkpoints of finished trials (removed by "
                                     "default)")
    threads: int | None = setting(None, Role.LOCAL, "torch CPU threads per job ({default})",
                                  default_text=": half the cores shared among the jobs, at least 1", bound=(">=", 1),
                                  metavar="T")
    dataset: str = setting("digits", Role.DEFINES, "digits (embedded, {default}), mnist, fashion-mnist, cifar10, or "
                           "imagefolder:PATH (one sub-folder of images per class)", group="data", default_text="",
                           metavar="NAME")
    data_root: str | None = setting(None, Role.LOCAL, "where torchvision datasets live ({default})", group="data",
                                    default_text=": $CVAE_BENCH_DATA or ~/.cache/cvae-bench/data", metavar="DIR")
    download: bool = setting(False, Role.LOCAL, "download mnist/fashion-mnist/cifar10 if absent (off by {default}: "
                             "nothing is fetched unless asked)", group="data", default_text="")
    image_size: int | None = setting(None, Role.DEFINES, "resize every image to PX x PX ({default}; needed for "
                                     "imagefolder images of mixed sizes)", group="data", default_text=": native size",
                                     unit="pixels", metavar="PX")
    limit: int | None = setting(None, Role.DEFINES, "keep at most N examples per split, for quick runs ({default})",
                                group="data", default_text=": all", unit="examples", metavar="N")
    tracking_uri: str | None = setting(None, Role.LOCAL, "MLflow tracking URI ({default})", group="tracking",
                                       default_text=": $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db", metavar="URI")
    experiment: str | None = setting(None, Role.STORED, "MLflow experiment ({default})", group="tracking",
                                     default_text="the study name", metavar="NAME")
    track: bool = setting(True, Role.LOCAL, "log nothing to MLflow", group="tracking", flag="--no-track")
    log_model: bool = setting(True, Role.LOCAL, "log no trained model (each COMPLETE trial logs its CVAE as an "
                              "MLflow logged model by default)", group="tracking", flag="--no-model")
    registered_model: str | None = setting(
        None, Role.STORED, "registered model the study's best trial is registered under, alias best ({default})",
        group="tracking", default_text="the study name", metavar="NAME")

    def __post_init__(self) -> None:
        from bench import check_variant, resolve_device

        check_variant(self.variant)
        hints = field_types()
        for f in fields(self):
            check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata["setting"])
        if self.objective == "rate-distortion" and self.pruner not in (None, "none"):
            raise ConfigError(f"pruner={self.pruner!r}: the rate-distortion objective has two values and Optuna "
                              "cannot prune multi-objective trials; use pruner none")
        if self.batch_trials > 1 and self.compile:
            raise ConfigError(f"compile=True: batched trials (batch_trials={self.batch_trials}) train eager; "
                              "drop --compile or use --batch-trials 1")
        if self.batch_trials > 1 and self.cuda_graphs:
            raise ConfigError(f"cuda_graphs=True: batched trials (batch_trials={self.batch_trials}) train without "
                              "CUDA graphs; leave --cuda-graphs unset or use --batch-trials 1")
        for name in ("study_name", "experiment", "registered_model"):  # None: the default; '' is no name
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ConfigError(f"{name}={getattr(self, name)!r}: must not be empty")
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed={self.seed!r}: must be an integer in 0..{MAX_SEED}")
        resolve_device(self.device)  # an unknown device, or cuda without a GPU, before any trial fails on it
        check_url(self.storage)

    @property
    def name(self) -> str:
        return self.study_name or f"{self.variant}-{dataset_slug(self.dataset)}-{self.objective}"

    @property
    def resolved_experiment(self) -> str:
        """The MLflow experiment of the study's runs: ``experiment``, else the study name."""
        return self.experiment or self.name

    @property
    def resolved_registered_model(self) -> str:
        """The registered model of the study's best trials: ``registered_model``, else the study name."""
        return self.registered_model or self.name

    @property
    def resolved_pruner(self) -> str:
        return self.pruner or ("median" if self.objective == "neg-elbo" else "none")

    @property
    def objective_names(self) -> tuple[str, ...]:
        return OBJECTIVES[self.objective]

    @property
    def resolved_threads(self) -> int:
        """torch CPU threads per job: ``threads``, else :func:`bench.training.config.default_cpu_threads`
        (half the cores shared among the jobs, >= 1)."""
        from bench.training.config import default_cpu_threads

        return self.threads or default_cpu_threads(self.jobs)


# -- the declaration, read back ----------------------------------------------------------------------

def fields_of(*roles: Role) -> tuple[Field, ...]:
    """The fields of :class:`StudySpec` of these roles (all when none given), in declaration order."""
    return tuple(f for f in fields(StudySpec) if not roles or f.metadata["setting"].role in roles)


def names(*roles: Role) -> tuple[str, ...]:
    return tuple(f.name for f in fields_of(*roles))


def setting_of(f: Field) -> Setting:
    return f.metadata["setting"]


@functools.cache
def field_types(cls: type = StudySpec) -> dict[str, Any]:
    """The field types of a dataclass (annotations evaluated)."""
    return typing.get_type_hints(cls)


def unwrap(hint: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of a field type: ``int | None`` -> ``(int, True)``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def expected(hint: Any, unit: str | None = None) -> str:
    """What a value of type ``hint`` must be, in words: ``an integer``, ``a number of seconds``, ..."""
    base, _ = unwrap(hint)
    if base is bool:
        return "true or false"
    if base is int:
        return "an integer"
    if base is float:
        return "a number" + (f" of {unit}" if unit else "")
    if typing.get_origin(base) is tuple:
        return f"a list of {unit or 'strings'}"
    return "a string"


def fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` (from Python, JSON or TOML) has the type ``hint``; ``None`` fits optional types."""
    base, optional = unwrap(hint)
    if value is None:
        return optional
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(base) is tuple:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return isinstance(value, base)


def check_value(name: str, value: Any, hint: Any, s: Setting) -> None:
    """:class:`ConfigError` ``name=value: must be ...`` unless ``value`` is a number of the field's type
    within its bound, or one of its choices. Strings and flags are checked where they are used."""
    base, optional = unwrap(hint)
    if value is None and optional:
        return
    if base in (int, float):
        op, limit = s.bound or (None, None)
        if not fits(base, value) or (op is not None and not _BOUNDS[op](value, limit)):
            bound = f" {op} {limit:g}" if op is not None else ""
            raise ConfigError(f"{name}={value!r}: must be {expected(base, s.unit)}{bound}")
    if s.choices is not None and value not in s.choices:
        raise ConfigError(f"{name}={value!r}: must be one of {', '.join(s.choices)}")


# -- the study's user attributes ---------------------------------------------------------------------

def attr_name(f: Field) -> str:
    """The study user attribute a defining or stored setting is kept in."""
    return setting_of(f).attr or f.name


def study_attrs(spec: StudySpec) -> dict[str, Any]:
    """The user attributes a study made from ``spec`` gets: every defining and stored setting, the
    pruner resolved (``median`` or ``none`` where the spec leaves it to the objective), so that the
    stored settings say what ran."""
    attrs = {attr_name(f): getattr(spec, f.name) for f in fields_of(Role.DEFINES, Role.STORED)}
    attrs["pruner"] = spec.resolved_pruner
    return attrs


def settings_from_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The defining and stored settings kept in a study's user attributes, by field name."""
    return {f.name: attrs[attr_name(f)] for f in fields_of(Role.DEFINES, Role.STORED) if attr_name(f) in attrs}
