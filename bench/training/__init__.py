"""Training: TrainConfig and model presets, the optimiser and train step, the harness loop, fit, the
batched fit of many same-shaped models at once, the step timer."""

from bench.training.batched import BatchMember, batched_fit, group_key
from bench.training.config import AMP_DTYPES, DEVICES, TrainConfig, resolve_device, torch_threads
from bench.training.harness_loop import HarnessLoop
from bench.training.loop import FitResult, NonFiniteLossError, fit
from bench.training.presets import check_variant, model_config
from bench.training.step import ADAM_IMPLEMENTATIONS, make_optimizer, make_train_step
from bench.training.step_timer import StepTimer

__all__ = ["ADAM_IMPLEMENTATIONS", "AMP_DTYPES", "DEVICES", "BatchMember", "FitResult", "HarnessLoop",
           "NonFiniteLossError", "StepTimer", "TrainConfig", "batched_fit", "check_variant", "fit", "group_key",
           "make_optimizer", "make_train_step", "model_config", "resolve_device", "torch_threads"]
