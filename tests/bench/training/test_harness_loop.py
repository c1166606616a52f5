"""fit steps through the harness loop: on CPU it trains exactly as the eager epoch did before (same
randperm calls, batch gather and schedule rows), it takes exactly epochs * steps optimizer steps, a
warm-up is undone in place, and CUDA graphs are a TrainConfig option / ``train`` flag (on on CUDA)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from bench.evaluation import elbo_terms, final_metrics
from bench.training import loop as fit_module
from bench.training.config import TrainConfig
from bench.training.harness_loop import HarnessLoop, TrainingState
from bench.training.loop import fit
from bench.training.presets import model_config
from bench.training.step import make_optimizer, make_train_step
from models import CVAE, schedule_table
from models.config import ConfigError

CPU = torch.device("cpu")
TIMING_METRICS = ("samples_per_s", "step_ms")  # wall-clock: not reproducible by design
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def old_eager_fit(model_cfg, train_cfg: TrainConfig, data) -> tuple[CVAE, list[dict[str, float]]]:
    """The reference: fit's eager CPU epoch as it was written before the harness loop (a copy of it)."""
    torch.manual_seed(train_cfg.seed)
    model = CVAE(model_cfg)
    optimizer = make_optimizer(model, train_cfg.lr, train_cfg.weight_decay)
    step_fn = make_train_step(model, optimizer, grad_clip=train_cfg.grad_clip)
    n = len(data.train)
    batch = min(train_cfg.batch_size, n)
    steps = n // batch
    table = schedule_table(model_cfg.beta, steps, train_cfg.epochs, CPU)
    gen = torch.Generator(device=CPU).manual_seed(train_cfg.seed)
    history = []
    for epoch in range(1, train_cfg.epochs + 1):
        perm = torch.randperm(n, device=CPU, generator=gen)
        stats = torch.empty(steps, 3)
        first = (epoch - 1) * steps
        for i in range(steps):
            idx = perm[i * batch:(i + 1) * batch]
            stats[i] = step_fn(data.train.x.index_select(0, idx), data.train.y.index_select(0, idx), table[first + i])
        means = stats.mean(0).tolist()
        val = elbo_terms(model, data.val, train_cfg.eval_batch_size)
        history.append({"epoch": epoch, "train_recon": means[1], "train_kl": means[2],
                        "train_neg_elbo": means[1] + means[2], "val_recon": val["recon"], "val_kl": val["kl"],
                        "val_neg_elbo": val["neg_elbo"], "beta": table[first:first + steps, 0].mean().item()})
    return model, history


CASES = {
    "cvae-linear-beta-clipped": (dict(variant="beta-cvae", beta=1.0, beta_schedule="linear", warmup_epochs=2),
                                 dict(epochs=3, batch_size=100, grad_clip=1.0, seed=3)),
    "flow-cvae-iaf-decay": (dict(variant="flow-cvae", flow="iaf", flow_length=2),
                            dict(epochs=2, weight_decay=1e-4, seed=7)),
}


@pytest.mark.parametrize("model_options, train_options", CASES.values(), ids=CASES.keys())
def test_fit_on_cpu_trains_exactly_as_the_old_eager_epoch(digits, model_options, train_options):
    """Same seed: bit-identical history, parameters and final metrics (not approximately: the same floats)."""
    cfg = model_config(data=digits, **model_options)
    train_cfg = TrainConfig(device="cpu", iw_samples=10, **train_options)
    reference, history = old_eager_fit(cfg, train_cfg, digits)
    result = fit(cfg, train_cfg, digits, progress=False)
    assert [{k: v for k, v in h.items() if k not in TIMING_METRICS} for h in result.history] == history
    got, want = result.model.state_dict(), reference.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert result.final == final_metrics(reference, digits, iw_samples=10, seed=train_cfg.seed)


def test_fit_takes_exactly_epochs_times_steps_optimizer_steps(digits, monkeypatch):
    calls, optimizers = [], []
    real_step, real_optimizer = fit_module.make_train_step, fit_module.make_optimizer

    def counting_step(*args, **kwargs):
        step = real_step(*args, **kwargs)

        def counted(x, y, weight):
            calls.append(x.shape[0])
            return step(x, y, weight)

        return counted

    def kept_optimizer(*args, **kwargs):
        optimizers.append(real_optimizer(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(fit_module, "make_train_step", counting_step)
    monkeypatch.setattr(fit_module, "make_optimizer", kept_optimizer)
    fit(model_config("cvae", digits), TrainConfig(epochs=3, batch_size=200, device="cpu"), digits, progress=False,
        final_eval=False)
    steps = len(digits.train) // 200  # 1437 // 200 = 7 full batches, the partial one dropped
    assert calls == [200] * (3 * steps)
    (optimizer,) = optimizers
    assert {float(s["step"]) for s in optimizer.state.values()} == {3.0 * steps}  # Adam counted the same


def test_loop_reads_the_schedule_by_global_step_and_draws_one_randperm_per_epoch(digits):
    """A table of two epochs: step i of epoch e gets row (e-1) * rows + i; batches are rows of one
    randperm from the loop's generator (seeded like fit's), in order."""
    seen = []

    def recording_step(x, y, weight):
        seen.append((x.clone(), weight.clone()))
        return torch.zeros(3)

    torch.manual_seed(0)
    model = CVAE(model_config("cvae", digits))
    rows, batch = len(digits.train) // 300, 300
    table = torch.arange(2 * rows * 2, dtype=torch.float32).view(2 * rows, 2)
    loop = HarnessLoop(model, recording_step, digits.train, batch, CPU, cuda_graphs=False, seed=5, warmup_steps=0,
                       table=table)
    gen = torch.Generator().manual_seed(5)
    for epoch in range(2):
        loop.prepare()
        loop.run(rows)
        perm = torch.randperm(len(digits.train), generator=gen)
        for i in range(rows):
            x, weight = seen[epoch * rows + i]
            assert torch.equal(x, digits.train.x[perm[i * batch:(i + 1) * batch]])
            assert torch.equal(weight, table[epoch * rows + i])
    assert len(seen) == 2 * rows


def test_warm_up_is_undone_in_place(digits):
    """After warm-up steps with the optimizer given, parameters and Adam's state are as before (same
    tensors, same values), and training continues exactly as a loop that never warmed up."""
    cfg = model_config("flow-cvae", digits)

    def build(warmup_steps: int):
        torch.manual_seed(0)
        model = CVAE(cfg)
        optimizer = make_optimizer(model, 1e-2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        addresses = [p.data_ptr() for p in model.parameters()]
        loop = HarnessLoop(model, make_train_step(model, optimizer), digits.train, 64, CPU, cuda_graphs=False,
                           seed=0, warmup_steps=warmup_steps, optimizer=optimizer)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert [p.data_ptr() for p in model.parameters()] == addresses
        return model, optimizer, loop

    trained = []
    for warmup_steps in (3, 0):
        model, optimizer, loop = build(warmup_steps)
        if warmup_steps:
            assert len(optimizer.state) == len(list(model.parameters()))  # the warm-up created Adam's state...
            for state in optimizer.state.values():  # ...and it is back at its initial value
                assert all(not v.any() for v in state.values())
        torch.manual_seed(1)  # the warm-up drew reparameterisation noise: align the global RNG
        loop.prepare()
        loop.run(10)
        trained.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(trained[0], trained[1])


def test_training_state_restores_into_the_same_tensors(digits):
    torch.manual_seed(0)
    model = CVAE(model_config("cvae", digits))
    optimizer = make_optimizer(model, 1e-2)
    step = make_train_step(model, optimizer)
    x, y, weight = digits.train.x[:32], digits.train.y[:32], torch.tensor([1.0, 0.0])
    step(x, y, weight)  # Adam's state exists before the copy is taken
    saved = TrainingState(model, optimizer)
    state_before = {id(p): {k: (v.data_ptr(), v.clone()) for k, v in s.items()} for p, s in optimizer.state.items()}
    params_before = [(p.data_ptr(), p.detach().clone()) for p in model.parameters()]
    for _ in range(3):
        step(x, y, weight)
    saved.restore()
    for p, (address, value) in zip(model.parameters(), params_before):
        assert p.data_ptr() == address and torch.equal(p.detach(), value)
    for p, state in optimizer.state.items():
        for k, v in state.items():
            address, value = state_before[id(p)][k]
            assert v.data_ptr() == address and torch.equal(v, value)


# -- cuda_graphs: the option and the flag --------------------------------------------------------


def test_cuda_graphs_on_cpu_is_a_config_error_naming_the_value():
    with pytest.raises(ConfigError) as err:
        TrainConfig(cuda_graphs=True, device="cpu")
    message = str(err.value)
    assert message.startswith("cuda_graphs=True:") and "device='cpu'" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^cuda_graphs='yes': must be True, False or None"):
        TrainConfig(cuda_graphs="yes")


def test_cuda_graphs_default_follows_the_device(monkeypatch):
    assert TrainConfig(device="cpu").cuda_graphs is None
    assert TrainConfig(device="cpu").use_cuda_graphs(CPU) is False
    assert TrainConfig(device="cpu", cuda_graphs=False).use_cuda_graphs(CPU) is False
    assert TrainConfig(device="cuda").use_cuda_graphs(torch.device("cuda", 1)) is True
    assert TrainConfig(device="cuda", cuda_graphs=False).use_cuda_graphs(torch.device("cuda")) is False
    # device "auto" only says where it runs once resolved: without a GPU, asking for graphs fails then
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = TrainConfig(device="auto", cuda_graphs=True)
    with pytest.raises(ConfigError, match=r"^cuda_graphs=True: .*device='auto' is cpu here"):
        fit(None, auto, None)  # fails before anything is built


def _train_parser() -> argparse.ArgumentParser:
    from bench.cli import train

    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    return parser


@pytest.mark.parametrize("flag, expected", [([], None), (["--cuda-graphs"], True), (["--no-cuda-graphs"], False)])
def test_train_cuda_graphs_flag_reaches_the_train_config(digits, flag, expected):
    from bench.cli.train import configs_from_args

    args = _train_parser().parse_args(["train", *flag, "--eval-batch-size", "2000"])
    assert args.cuda_graphs is expected
    _, train_cfg = configs_from_args(args, digits)
    assert train_cfg.cuda_graphs is expected and train_cfg.eval_batch_size == 2000


def test_train_help_states_the_cuda_graphs_default(capsys):
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cuda-graphs, --no-cuda-graphs" in text
    assert "default: on when the device is CUDA, off on CPU" in text


def test_train_with_cuda_graphs_on_cpu_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    from studies.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["train", "--device", "cpu", "--cuda-graphs", "--epochs", "1", "--no-track", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cuda_graphs=True" in err


# -- CUDA (skipped without a GPU) -----------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("variant", ["cvae", "flow-cvae"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_graphs_train_like_eager_steps(digits, monkeypatch, variant, device):
    """Graphs on vs off: the same -ELBO within noise (different noise draws), exactly epochs * steps
    Adam steps (the warm-up undone), and the capture happened on the chosen device."""
    loops, optimizers = [], []
    real_loop, real_optimizer = fit_module.HarnessLoop, fit_module.make_optimizer
    monkeypatch.setattr(fit_module, "HarnessLoop", lambda *a, **k: loops.append(real_loop(*a, **k)) or loops[-1])
    monkeypatch.setattr(fit_module, "make_optimizer",
                        lambda *a, **k: optimizers.append(real_optimizer(*a, **k)) or optimizers[-1])
    cfg = model_config(variant, digits)
    results = {}
    for graphs in (False, True):
        results[graphs] = fit(cfg, TrainConfig(epochs=5, device=device, cuda_graphs=graphs), digits, progress=False,
                              final_eval=graphs)
    steps = len(digits.train) // 64
    assert loops[0].graph is None and loops[1].graph is not None
    assert loops[1].stats.device == torch.device("cuda", 0)
    for optimizer in optimizers:
        assert {float(s["step"]) for s in optimizer.state.values()} == {5.0 * steps}
    eager, graphed = (results[g].history[-1]["val_neg_elbo"] for g in (False, True))
    assert graphed == pytest.approx(eager, abs=1.0)  # nats; ~27 after 5 epochs
    assert all(math.isfinite(v) for v in results[True].final.values())
    assert results[True].step_seconds > 0 and results[True].step_seconds <= results[True].train_seconds


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_fit_on_the_second_gpu_leaves_the_first_alone(digits):
    """Graph capture, streams and the step timer's events follow --device cuda:1, not the current device."""
    torch.cuda.set_device(0)
    torch.cuda.synchronize(0)
    before = torch.cuda.memory_allocated(0)
    result = fit(model_config("cvae", digits), TrainConfig(epochs=2, device="cuda:1"), digits, progress=False,
                 final_eval=False)
    assert torch.cuda.memory_allocated(0) == before
    assert next(result.model.parameters()).device == torch.device("cuda", 1)
    assert all(h["step_ms"] > 0 for h in result.history)
