"""A trained CVAE on disk and back: its weights, the config that rebuilds it and its class names.

No MLflow here: this is the folder an MLflow logged model carries (as the ``data`` of a pyfunc model
whose ``loader_module`` is this module, with the ``models`` package as its code), and what
``cvae-bench sample`` and ``evaluate`` load. Layout of a saved folder::

    cvae.json   {"format": 1, "config": CVAEConfig.to_dict(), "class_names": [...]}
    cvae.pt     the state_dict (flows included), read back with ``torch.load(weights_only=True)``

Through MLflow, ``mlflow.pyfunc.load_model(uri).predict({"label": [3, 7]})`` draws one image per
label (class indices, the logged model's signature): an array (N, C, H, W) float32 in [0, 1]
(decoder means, z ~ N(0, T^2 I); parameters ``temperature`` and ``seed``).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from models.config import ConfigError, CVAEConfig
from models.cvae import CVAE

FORMAT = 1
CONFIG_FILE = "cvae.json"
WEIGHTS_FILE = "cvae.pt"


class SavedModelError(ValueError):
    """A saved folder that is missing files, or whose files cannot be read: the message names the folder."""


@dataclass
class SavedCVAE:
    """A CVAE loaded from a folder, with the names of its classes (index i is ``class_names[i]``)."""

    model: CVAE
    class_names: tuple[str, ...]

    @property
    def config(self) -> CVAEConfig:
        return self.model.cfg

    def label_index(self, label: str | int) -> int:
        """The class index of ``label``: a class name, or an index given as an int or as digits.
        A label that is neither is a ConfigError listing the classes."""
        names = self.class_names
        if isinstance(label, str) and label in names:
            return names.index(label)
        text = str(label).strip()
        if text.isdigit() and int(text) < len(names):
            return int(text)
        raise ConfigError(f"label={label!r}: not a class of this model; its classes are "
                          + ", ".join(f"{i}={n}" for i, n in enumerate(names)))

    @torch.no_grad()
    def sample(self, labels: Sequence[int], *, temperature: float = 1.0, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """Decoder means for z ~ N(0, temperature^2 I), one per label: (N, C, H, W) in [0, 1]."""
        if not temperature > 0:
            raise ConfigError(f"temperature={temperature!r}: must be > 0")
        device = next(self.model.parameters()).device
        y = torch.as_tensor(list(labels), dtype=torch.long)
        z = torch.randn(len(y), self.config.latent_dim, generator=generator) * temperature
        self.model.eval()
        return self.model.generate(y.to(device), z.to(device)).float().clamp_(0, 1).cpu()


def save(model: CVAE, folder: str | Path, class_names: Sequence[str]) -> Path:
    """Write ``model`` (its config and state_dict) and its class names into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(class_names) != model.cfg.num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {model.cfg.num_classes} classes")
    meta = {"format": FORMAT, "config": model.cfg.to_dict(), "class_names": [str(c) for c in class_names]}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    return folder


def load(folder: str | Path, map_location: str | torch.device = "cpu") -> SavedCVAE:
    """The CVAE saved in ``folder`` (eval mode, on ``map_location``); :class:`SavedModelError` if it cannot be read."""
    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise SavedModelError(f"{folder}: missing {', '.join(missing)} (not a saved CVAE, or an incomplete copy)")
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise SavedModelError(f"{folder / CONFIG_FILE}: format {meta.get('format')!r}, this code reads {FORMAT}")
        cfg = CVAEConfig.from_dict(meta["config"])
        model = CVAE(cfg)
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except SavedModelError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise SavedModelError(f"{folder}: cannot load the saved CVAE ({type(exc).__name__}: {detail})") from None
    model.to(map_location).eval()
    return SavedCVAE(model=model, class_names=tuple(meta["class_names"]))


class PyfuncCVAE:
    """What ``mlflow.pyfunc.load_model`` returns the ``predict`` of: labels in, images out."""

    def __init__(self, saved: SavedCVAE) -> None:
        self.saved = saved

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """``model_input``: labels (indices or class names) as a list, an array or a one-column DataFrame
        (what MLflow makes of a request ``{"inputs": {"label": [3, 7]}}`` under the logged model's
        signature). Returns (N, C, H, W) float32 in [0, 1]. ``params``: ``temperature`` (default 1) and
        ``seed`` (default, or < 0: fresh latent draws each call)."""
        if hasattr(model_input, "to_numpy"):
            model_input = model_input.to_numpy().reshape(-1)
        labels = [self.saved.label_index(v.item() if hasattr(v, "item") else v) for v in list(model_input)]
        params = params or {}
        seed = int(params.get("seed", -1))
        gen = torch.Generator().manual_seed(seed) if seed >= 0 else None
        return self.saved.sample(labels, temperature=float(params.get("temperature", 1.0)), generator=gen).numpy()

    def unwrap_python_model(self) -> SavedCVAE:
        return self.saved


def _load_pyfunc(data_path: str) -> PyfuncCVAE:
    """MLflow's pyfunc entry point (``loader_module="models.saved_model"``)."""
    return PyfuncCVAE(load(data_path))
