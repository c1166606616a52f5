"""``cvae-bench regress``: the committed baseline passes; a planted change fails with a table; bad files exit 2."""

from __future__ import annotations

import json

import pytest

from bench.errors import CLIError
from bench.gates.quality import METRICS, Tolerance, check, default_baseline_path, load_baseline
from studies.cli import main


@pytest.fixture
def shipped() -> dict:
    return json.loads(default_baseline_path().read_text())


def write_copy(tmp_path, doc: dict, variants: tuple[str, ...] | None = None) -> str:
    doc = json.loads(json.dumps(doc))
    if variants is not None:
        doc["variants"] = {v: doc["variants"][v] for v in variants}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_shipped_baseline_is_valid_and_justified(shipped):
    baseline = load_baseline(default_baseline_path())
    assert set(baseline.values) == {"cvae", "beta-cvae", "flow-cvae"}
    assert baseline.protocol["dataset"] == "digits" and baseline.protocol["seed"] == 0
    ranges = shipped["spread"]["range"]
    assert len(shipped["spread"]["seeds"]) >= 3
    for variant in baseline.values:
        for metric in METRICS:
            # every tolerance sits above the seed-to-seed spread it was derived from
            assert baseline.tolerance(variant, metric).abs >= ranges[variant][metric]


def test_check_flags_values_outside_the_tolerance(shipped, tmp_path):
    baseline = load_baseline(write_copy(tmp_path, shipped))
    current = {v: dict(m) for v, m in baseline.values.items()}
    assert not any(r.moved for r in check(baseline, current))
    allowed = baseline.tolerance("cvae", "test_kl").abs
    current["cvae"]["test_kl"] += 1.01 * allowed
    moved = [r for r in check(baseline, current) if r.moved]
    assert [(r.variant, r.metric) for r in moved] == [("cvae", "test_kl")]
    current["cvae"]["test_kl"] = float("nan")
    assert any(r.moved for r in check(baseline, current))


def test_tolerance_is_the_larger_of_abs_and_rel():
    assert Tolerance(abs=0.5, rel=0.1).allowed(20.0) == pytest.approx(2.0)
    assert Tolerance(abs=0.5, rel=0.01).allowed(-20.0) == pytest.approx(0.5)


@pytest.mark.slow
def test_regress_passes_on_the_committed_baseline(capsys):
    assert main(["regress"]) == 0
    out = capsys.readouterr().out
    assert "all 9 metrics within tolerance" in out and "MOVED" not in out


@pytest.mark.slow
def test_regress_fails_with_a_table_on_a_corrupted_baseline_value(shipped, tmp_path, capsys):
    doc = json.loads(json.dumps(shipped))
    doc["variants"]["cvae"]["test_neg_elbo"] -= 1.0  # the baseline claims a 1-nat better model
    path = write_copy(tmp_path, doc, variants=("cvae",))
    assert main(["regress", "--baseline", path]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "test_neg_elbo" in line and "cvae" in line)
    assert "MOVED" in row
    # variant, metric, baseline, current, delta, tolerance, status. The fresh run lands within the gate's
    # own tolerance of the shipped value, not on its digits (another CPU trains it 0.001 nats apart).
    baseline, current, delta, tolerance = map(float, row.split()[2:6])
    assert baseline == pytest.approx(shipped["variants"]["cvae"]["test_neg_elbo"] - 1.0, abs=1e-4)
    assert delta == pytest.approx(current - baseline, abs=2e-4)
    assert abs(delta - 1.0) < tolerance
    assert "cvae:test_neg_elbo" in out


@pytest.mark.slow
def test_regress_fails_when_training_gets_worse(shipped, tmp_path, capsys):
    doc = json.loads(json.dumps(shipped))
    doc["protocol"]["epochs"] = 3  # a planted change: the same budget cut short trains a worse model
    path = write_copy(tmp_path, doc, variants=("beta-cvae",))
    assert main(["regress", "--baseline", path]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "test_neg_elbo" in line)
    assert "MOVED" in row and float(row.split()[4]) > 0  # -ELBO went up


@pytest.mark.slow
def test_update_rewrites_values_and_keeps_tolerances(shipped, tmp_path, capsys):
    doc = json.loads(json.dumps(shipped))
    doc["variants"]["beta-cvae"]["test_kl"] = 99.0
    path = write_copy(tmp_path, doc, variants=("beta-cvae",))
    assert main(["regress", "--baseline", path, "--update"]) == 0
    updated = json.loads(open(path).read())
    assert updated["tolerances"] == shipped["tolerances"]
    assert updated["variant_tolerances"] == shipped["variant_tolerances"]
    assert updated["variants"]["beta-cvae"] == pytest.approx(shipped["variants"]["beta-cvae"], abs=1e-3)
    assert main(["regress", "--baseline", path]) == 0


@pytest.mark.parametrize("content, message", [
    (None, "baseline file not found"),
    ("{oops", "is not JSON"),
    ({"variants": {"cvae": {}}}, "missing 'tolerances'"),
    ({"tolerances": {m: {"abs": 0.1} for m in METRICS}, "variants": {"vae": {}}}, "unknown variant"),
    ({"tolerances": {m: {"abs": -1} for m in METRICS}, "variants": {"cvae": {}}}, "tolerances.test_neg_elbo"),
    ({"tolerances": {m: {"abs": 0.1} for m in METRICS}, "variants": {"cvae": {"test_kl": 1.0}}}, "needs finite"),
    (b"\xff\xfe\x00binary", "not UTF-8 text"),
    ({"protocol": {"threads": 0}, "tolerances": {m: {"abs": 0.1} for m in METRICS},
      "variants": {"cvae": {m: 1.0 for m in METRICS}}}, "protocol.threads=0 must be an integer >= 1"),
    ({"protocol": {"seed": "a"}, "tolerances": {m: {"abs": 0.1} for m in METRICS},
      "variants": {"cvae": {m: 1.0 for m in METRICS}}}, "protocol.seed='a' must be an integer >= 0"),
])
def test_bad_baseline_is_one_line_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "b.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["regress", "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_spread_seeds_needs_update(capsys):
    assert main(["regress", "--spread-seeds", "3"]) == 2
    assert "--update" in capsys.readouterr().err


def test_load_baseline_raises_cli_error(tmp_path):
    with pytest.raises(CLIError):
        load_baseline(tmp_path / "none.json")
