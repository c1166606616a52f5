"""Run figures: what the data of each shows (bench.figures.compute) and what is drawn of it (bench.figures.draw)."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import make_grid

from bench.figures import draw as figures
from bench.figures.kinds import FIGURE_FILES, ImageGrid, KLPerDim, TrainingCurves

#: PNG pixels are bytes: an exact copy of a float image is within half a level of it.
HALF_LEVEL = 0.5 / 255


@pytest.fixture(scope="module")
def fitted(digits):
    """A 2-epoch CVAE (latent 6) on digits, and the data of its figures."""
    from bench.figures.compute import fit_figure_data
    from bench.training.config import TrainConfig
    from bench.training.loop import fit
    from bench.training.presets import model_config

    result = fit(model_config("cvae", digits, latent_dim=6), TrainConfig(epochs=2), digits, progress=False,
                 final_eval=False)
    return result, fit_figure_data(result)


def png_pixels(data) -> np.ndarray:
    """What :func:`save_png` writes for ``data``: (H, W, 3) floats in [0, 1]."""
    buffer = io.BytesIO()
    figures.save_png(data, buffer)
    buffer.seek(0)
    with Image.open(buffer) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=float) / 255


def drawn(figure):
    """``figure`` rendered once (tick positions and labels are settled at draw time)."""
    figure.canvas.draw()
    return figure


def test_figures_show_what_they_say(fitted, digits):
    result, data = fitted
    assert set(data) == set(FIGURE_FILES)
    cell = 8 + 1  # 8x8 digits, 1 px padding
    samples = data["class_samples"]
    assert samples.pixels.shape == (10 * cell + 1, 10 * cell + 1)  # one row per class, 10 samples each
    assert samples.row_labels == tuple(digits.class_names)
    recon = data["reconstructions"]
    assert recon.pixels.shape == (2 * cell + 1, 10 * cell + 1) and recon.row_labels == ("data", "recon")
    np.testing.assert_allclose(recon.pixels[1:9, 1:9], digits.val.x[0, 0].numpy())  # top-left: the first original
    traversal = data["latent_traversal"]
    assert traversal.pixels.shape == (6 * cell + 1, 9 * cell + 1)  # all 6 latent dims, 9 steps
    assert len(traversal.row_labels) == 6 and all(label.startswith("z") for label in traversal.row_labels)
    kl = result.model.kl_per_dim(digits.val.x, digits.val.y)
    np.testing.assert_allclose(data["kl_per_dim"].kl, kl.numpy(), rtol=1e-5)
    assert list(data["recon_vs_kl"].epochs) == [1, 2]

    # drawn: what a run's PNGs show
    for name in ("reconstructions", "class_samples", "latent_traversal"):
        grid, image = data[name], png_pixels(data[name])
        layout = figures.grid_layout(grid)
        (x0, y0), (h, w), scale = (layout.left, layout.top), grid.pixels.shape, layout.scale
        assert image.shape == (layout.height, layout.width, 3)
        region = image[y0:y0 + h * scale, x0:x0 + w * scale]
        for channel in range(3):
            np.testing.assert_allclose(region[..., channel], np.kron(grid.pixels, np.ones((scale, scale))),
                                       atol=HALF_LEVEL)
        assert image[:y0].min() < 0.5 and image[y0:, :x0].min() < 0.5  # a title above, row labels at the left
        figure = figures.draw(grid)
        (ax,) = figure.axes
        assert [t.get_text() for t in figure.texts] == [grid.title]
        assert [t.get_text() for t in ax.texts] == list(grid.row_labels)
        assert not ax.axison  # no ticks, no frame
        assert ax.images[0].get_interpolation() == "nearest"
    bars = figures.draw(data["kl_per_dim"]).axes[0].patches
    assert len(bars) == 6  # one bar per latent dimension
    np.testing.assert_allclose([bar.get_height() for bar in bars], data["kl_per_dim"].kl, rtol=1e-6)
    axes = figures.draw(data["recon_vs_kl"]).axes
    for ax, term in zip(axes[:2], ("recon", "kl")):  # recon, KL: train and val lines
        train, val = ax.get_lines()
        np.testing.assert_array_equal(train.get_ydata(), [h[f"train_{term}"] for h in result.history])
        np.testing.assert_array_equal(val.get_ydata(), [h[f"val_{term}"] for h in result.history])
    points = axes[2].collections[0]
    np.testing.assert_array_equal(points.get_offsets(), [[h["val_kl"], h["val_recon"]] for h in result.history])


def test_figure_data_neither_draws_from_nor_restores_the_global_rng(fitted, monkeypatch):
    """Computing figures beside a training thread (batched trials) must leave that thread's random
    stream alone: no draw, and no save-and-restore that would rewind it."""
    from bench.figures.compute import fit_figure_data

    def restore(*args, **kwargs):
        raise AssertionError("fit_figure_data set the global RNG state")

    before = torch.get_rng_state()
    monkeypatch.setattr(torch, "set_rng_state", restore)
    again = fit_figure_data(fitted[0])
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(again["class_samples"].pixels, fitted[1]["class_samples"].pixels)


def test_image_grids_are_make_grid_of_the_decoded_images(fitted, digits):
    result, data = fitted
    model, val = result.model, digits.val
    with torch.no_grad():
        x, y = val.x[:10], val.y[:10]
        decoded = torch.cat([x, model.reconstruct(x, y)])
        z = torch.randn(10 * 10, 6, generator=torch.Generator().manual_seed(0))
        samples = model.generate(torch.arange(10).repeat_interleave(10), z)
    for grid, images, nrow in ((data["reconstructions"], decoded, 10), (data["class_samples"], samples, 10)):
        expected = make_grid(images, nrow=nrow, padding=1, pad_value=1.0)
        assert torch.equal(expected[0], expected[1]) and torch.equal(expected[0], expected[2])  # grey, 3 times
        np.testing.assert_array_equal(grid.pixels, expected[0].numpy())
        assert grid.pixels.dtype == np.float32 and (grid.cell_px, grid.pad) == (8, 1)
    traversal = data["latent_traversal"]
    assert traversal.pixels.min() >= 0.0 and traversal.pixels.max() <= 1.0
    np.testing.assert_array_equal(traversal.pixels[0, :], 1.0)  # white padding around the grid
    np.testing.assert_array_equal(traversal.pixels[:, 9 * np.arange(10)], 1.0)  # and between columns


def test_rgb_and_large_images_draw_pixel_for_pixel():
    from bench.figures.compute import image_grid

    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rgb = image_grid(images, nrow=3, title="colour", row_labels=("a", "b"))
    assert rgb.pixels.shape == (2 * 33 + 1, 3 * 33 + 1, 3) and rgb.cell_px == 32  # RGB keeps its 3 channels
    np.testing.assert_array_equal(rgb.pixels, make_grid(images, nrow=3, padding=1, pad_value=1.0).permute(1, 2, 0))
    image = png_pixels(rgb)
    layout = figures.grid_layout(rgb)
    (x0, y0), (h, w, _) = (layout.left, layout.top), rgb.pixels.shape
    assert layout.scale == 1 and image.shape == (layout.height, layout.width, 3)
    np.testing.assert_allclose(image[y0:y0 + h, x0:x0 + w], rgb.pixels, atol=HALF_LEVEL)


def test_ticks_are_round_and_labelled_to_their_step():
    epochs = np.arange(1.0, 21.0)
    curves = TrainingCurves(epochs=epochs, train_recon=40 - epochs, train_kl=np.sqrt(epochs),
                            val_recon=41 - epochs, val_kl=np.sqrt(epochs) + 0.1)
    figure = drawn(figures.draw(curves))
    for ax in figure.axes[:2]:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 20]
        assert len(ticks) >= 3 and all(t == int(t) for t in ticks)  # whole epochs only
        labels = [label.get_text() for label in ax.get_xticklabels() if 1 <= label.get_position()[0] <= 20]
        assert labels == [str(int(t)) for t in ticks]
        for label in ax.get_yticklabels():  # each label says its tick's value
            assert float(label.get_text().replace("\N{MINUS SIGN}", "-")) == pytest.approx(label.get_position()[1])
    bars = drawn(figures.draw(KLPerDim(np.linspace(0.0, 1.0, 32))))
    ticks = [t for t in bars.axes[0].get_xticks() if 0 <= t <= 31]
    assert len(ticks) >= 3 and all(t == int(t) for t in ticks)


def test_plots_have_their_titles_labels_and_units(fitted):
    result, data = fitted
    curves = figures.draw(data["recon_vs_kl"])
    assert [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in curves.axes] == [
        ("reconstruction (distortion)", "epoch", "nats / example"),
        ("KL (rate)", "epoch", "nats / example"),
        ("validation rate-distortion path", "val_kl (rate, nats)", "val_recon (distortion, nats)")]
    epochs = [h["epoch"] for h in result.history]
    for ax in curves.axes[:2]:
        train, val = ax.get_lines()
        assert (train.get_label(), train.get_linestyle(), val.get_label(), val.get_linestyle()) == (
            "train", "--", "val", "-")  # train dashed, val solid
        np.testing.assert_array_equal(train.get_xdata(), epochs)
        np.testing.assert_array_equal(val.get_xdata(), epochs)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val"]
    path = curves.axes[2]
    (line,) = path.get_lines()
    np.testing.assert_array_equal(line.get_xydata(), [[h["val_kl"], h["val_recon"]] for h in result.history])
    points = path.collections[0]
    drawn(curves)
    colours = points.get_facecolors()
    np.testing.assert_allclose(colours[-1], points.get_cmap()(1.0))  # the last epoch's point: yellow
    np.testing.assert_allclose(colours[0], points.get_cmap()(0.0))  # the first: dark
    assert sorted(t.get_text() for t in path.texts) == ["epoch 1", "epoch 2"]

    kl = data["kl_per_dim"].kl
    (ax,) = figures.draw(data["kl_per_dim"]).axes
    assert ax.get_title() == f"KL per latent dimension (total {kl.sum():.2f} nats)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("latent dimension", "nats / example")
    np.testing.assert_allclose([bar.get_x() + bar.get_width() / 2 for bar in ax.patches], np.arange(len(kl)))


def test_save_png_writes_a_png_of_a_sensible_size(fitted, tmp_path):
    _, data = fitted
    for name, figure_data in data.items():
        path = tmp_path / FIGURE_FILES[name].rpartition("/")[2]
        figures.save_png(figure_data, path)
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
        if isinstance(figure_data, ImageGrid):
            layout = figures.grid_layout(figure_data)
            assert (width, height) == (layout.width, layout.height)
            assert width >= figure_data.pixels.shape[1] * layout.scale and layout.scale * 8 >= 32
        else:
            assert 300 <= width <= 1600 and 200 <= height <= 600, (name, image.size)
    with pytest.raises(TypeError, match="no figure for dict"):
        figures.draw({})


def test_figures_draw_alike_from_many_threads(fitted):
    _, data = fitted
    serial = {name: png_pixels(d) for name, d in data.items()}
    with ThreadPoolExecutor(4) as pool:
        futures = {(name, i): pool.submit(png_pixels, d) for i in range(3) for name, d in data.items()}
    for (name, _), future in futures.items():
        np.testing.assert_array_equal(future.result(), serial[name])


def test_figures_drawn_on_the_frames_warm_up_prepares_are_the_same_pictures(fitted):
    """warm_up builds (and draws once) the frames of a run's figures ahead; what is drawn on them is
    pixel for pixel what is drawn on new ones."""
    _, data = fitted
    order = ["reconstructions", "class_samples", "latent_traversal", "recon_vs_kl", "kl_per_dim"]
    figures.warm_up()
    on_prepared = {name: png_pixels(data[name]) for name in order}  # 3 grids, then one of each plot
    for name in order:
        np.testing.assert_array_equal(png_pixels(data[name]), on_prepared[name], err_msg=name)


def test_drawing_imports_neither_torch_nor_matplotlib_until_it_draws():
    """The tracking process imports the drawing code and unpickles figure data: never torch; and
    matplotlib only once it warms up."""
    code = (
        "import sys\n"
        "import bench.figures, bench.figures.kinds, bench.figures.draw as draw\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, sorted(sys.modules)\n"
        "draw.warm_up()\n"
        "assert 'matplotlib.backends.backend_agg' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_grids_use_torchvisions_make_grid_without_importing_all_of_torchvision():
    """torchvision's package import pulls in torch._dynamo (~0.5 s at the end of each tracked run): the
    figures load torchvision/utils.py alone, which tiles exactly as ``torchvision.utils.make_grid``."""
    code = (
        "import sys, torch\n"
        "from bench.figures.compute import image_grid, make_grid_function\n"
        "make_grid = make_grid_function()\n"
        "images = torch.rand(7, 3, 5, 4, generator=torch.Generator().manual_seed(0))\n"
        "grid = image_grid(images, nrow=3, title='t')\n"
        "assert 'torchvision' not in sys.modules and 'torch._dynamo' not in sys.modules, 'imported'\n"
        "import inspect, os\n"
        "source = inspect.unwrap(make_grid).__code__.co_filename\n"
        "assert make_grid.__name__ == 'make_grid' and source.endswith(os.path.join('torchvision', 'utils.py')), source\n"
        "import torchvision.utils\n"
        "expected = torchvision.utils.make_grid(images, nrow=3, padding=1, pad_value=1.0)\n"
        "assert torch.equal(make_grid(images, nrow=3, padding=1, pad_value=1.0), expected)\n"
        "assert torch.equal(torch.from_numpy(grid.pixels), expected.permute(1, 2, 0))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
