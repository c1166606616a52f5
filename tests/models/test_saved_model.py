"""A trained CVAE on disk and back (models.saved_model): the same weights, config and outputs."""

from __future__ import annotations

import json

import pytest
import torch

from models import CVAE, ConfigError, CVAEConfig, FlowConfig
from models.saved_model import CONFIG_FILE, WEIGHTS_FILE, SavedModelError, load, save

NAMES = tuple(f"class-{i}" for i in range(4))


def flow_model() -> CVAE:
    torch.manual_seed(0)
    return CVAE(CVAEConfig(input_shape=(1, 8, 8), num_classes=4, variant="flow-cvae", hidden=(32,), latent_dim=5,
                           flow=FlowConfig(kind="iaf", length=2, iaf_hidden=16)))


def test_round_trip_keeps_config_weights_and_outputs(tmp_path):
    model = flow_model()
    saved = load(save(model, tmp_path / "m", NAMES))
    assert saved.config == model.cfg and saved.class_names == NAMES
    for (k, a), (k2, b) in zip(model.state_dict().items(), saved.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 3])
    model.eval()
    assert torch.allclose(model.reconstruct(x, y), saved.model.reconstruct(x, y))
    z = torch.randn(3, 5)
    assert torch.equal(model.generate(y, z), saved.model.generate(y, z))


def test_config_round_trips_through_json():
    cfg = flow_model().cfg
    assert CVAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        CVAEConfig.from_dict({**cfg.to_dict(), "colour": "blue"})


def test_labels_by_name_or_index_and_a_bad_label_lists_the_classes(tmp_path):
    saved = load(save(flow_model(), tmp_path, NAMES))
    assert saved.label_index("class-2") == 2 and saved.label_index(3) == 3 and saved.label_index("1") == 1
    with pytest.raises(ConfigError, match=r"label='7'.*0=class-0, 1=class-1, 2=class-2, 3=class-3"):
        saved.label_index("7")
    images = saved.sample([0, 0, 2], generator=torch.Generator().manual_seed(1))
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    again = saved.sample([0, 0, 2], generator=torch.Generator().manual_seed(1))
    assert torch.equal(images, again)
    with pytest.raises(ConfigError, match="temperature"):
        saved.sample([0], temperature=0)


def test_missing_or_corrupt_files_name_the_folder(tmp_path):
    folder = save(flow_model(), tmp_path / "m", NAMES)
    (folder / WEIGHTS_FILE).write_bytes(b"not a torch file")
    with pytest.raises(SavedModelError, match=f"{folder}: cannot load"):
        load(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(SavedModelError, match=f"{folder}: missing {WEIGHTS_FILE}"):
        load(folder)
    (folder / CONFIG_FILE).write_text("{}")
    torch.save(flow_model().state_dict(), folder / WEIGHTS_FILE)
    with pytest.raises(SavedModelError, match="format None"):
        load(folder)


def test_pyfunc_predict_takes_labels_and_returns_images(tmp_path):
    from models.saved_model import _load_pyfunc

    predictor = _load_pyfunc(str(save(flow_model(), tmp_path, NAMES)))
    images = predictor.predict(["class-1", 2, 3], params={"seed": 0})
    assert images.shape == (3, 1, 8, 8) and images.dtype.name == "float32"
