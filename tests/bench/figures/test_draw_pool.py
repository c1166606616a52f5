"""Figures drawn by forked workers (bench.figures.draw_pool) are the figures drawn in-process, and a
worker that dies loses none of them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.figures import draw as figures
from bench.figures.draw_pool import DrawPool
from bench.figures.kinds import FIGURE_FILES


@pytest.fixture(scope="module")
def figure_data(digits):
    """The data of the five figures of a 2-epoch CVAE on digits."""
    from bench.figures.compute import fit_figure_data
    from bench.training.config import TrainConfig
    from bench.training.loop import fit
    from bench.training.presets import model_config

    result = fit(model_config("cvae", digits, latent_dim=6), TrainConfig(epochs=2), digits, progress=False,
                 final_eval=False)
    return fit_figure_data(result)


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


NAMES = {name: file.rpartition("/")[2] for name, file in FIGURE_FILES.items()}


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_the_pool_draws_what_save_png_draws(figure_data, tmp_path, workers):
    figures.warm_up()
    pool = DrawPool(workers)
    try:
        assert pool.size == workers
        pool.submit(figure_data, tmp_path, NAMES)
        done = pool.collect()
    finally:
        pool.close()
    assert sorted(done) == sorted(figure_data)
    for name, path in done.items():
        assert path == str(tmp_path / NAMES[name])
        figures.save_png(figure_data[name], tmp_path / f"direct-{NAMES[name]}")
        np.testing.assert_array_equal(_pixels(path), _pixels(tmp_path / f"direct-{NAMES[name]}"), err_msg=name)


def test_figures_of_a_worker_that_died_are_drawn_by_the_caller(figure_data, tmp_path):
    pool = DrawPool(2)
    try:
        victim, _ = pool._workers[0]
        victim.kill()
        victim.join()
        pool.submit(figure_data, tmp_path, NAMES)
        done = pool.collect()
    finally:
        pool.close()
    assert sorted(done) == sorted(figure_data)
    assert all((tmp_path / NAMES[name]).stat().st_size > 1000 for name in figure_data)


def test_the_longest_figure_gets_a_worker_of_its_own(figure_data, tmp_path):
    pool = DrawPool(2)
    try:
        pool.submit(figure_data, tmp_path, NAMES)
        shares = [sorted(name for name, _, _ in share) for _, share in pool._pending]
        pool.collect()
    finally:
        pool.close()
    assert sorted(shares) == sorted([["recon_vs_kl"], ["class_samples", "kl_per_dim", "latent_traversal",
                                                        "reconstructions"]])


def test_a_worker_exits_when_its_owner_goes_without_closing_the_pool():
    """Workers keep no copy of the pipes they inherit: when the owner's end closes (it died), they end."""
    pool = DrawPool(2)
    processes = [process for process, _ in pool._workers]
    for _, conn in pool._workers:
        conn.close()
    for process in processes:
        process.join(timeout=10)
        assert not process.is_alive()
