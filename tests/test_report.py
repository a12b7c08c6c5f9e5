"""The report and scaling experiments run end to end through the launcher on a small results table."""

import importlib.util
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxbrain import launch, results, scaling

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_plots import results_rows  # noqa: E402


def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(f"configs.{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_report_from_a_results_table(tmp_path):
    source = tmp_path / "run"
    results.write_csv(source / "results.csv", results_rows())
    config = load_config("report", f"source={source}")
    summary = launch.launch(config, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Test scores" in text and "### Test r_nc" in text and "### Test r" in text
    assert "## Layer profiles" in text
    for name in summary["plots"]:
        assert f"]({name})" in text
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG"
    assert (tmp_path / "out" / "scores_r_nc.csv").is_file()
    assert (tmp_path / "out" / "summary.json").is_file()


def test_report_rejects_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.csv"):
        launch.launch(load_config("report", f"source={tmp_path / 'nothing'}"), tmp_path / "out")


def test_fit_scaling_experiment_recovers_a_planted_law(tmp_path):
    rng = np.random.default_rng(0)
    models = [f"m{i}" for i in range(8)]
    flops = np.logspace(8, 10, 8)
    samples = np.full(8, 1e6)
    compute = flops * samples
    rows = []
    for model, c in zip(models, compute):
        for bench, E in (("fz", 0.45), ("mh", 0.55)):
            value = 1 - scaling.law(c / 1e12, E, 0.5, 0.4) + rng.normal(0, 0.002)
            rows.append(dict(model=model, benchmark=bench, subject="s1", roi="V1", layer="l", depth=1.0,
                             stage="test", metric="r_nc", value=value, n_targets=5, alpha=1.0, seed=0))
    source = tmp_path / "run"
    results.write_csv(source / "results.csv", pd.DataFrame(rows))
    results.write_csv(tmp_path / "inventory.csv",
                      pd.DataFrame(dict(model=models, family="toy", params=np.logspace(5, 7, 8), flops=flops,
                                        samples=samples)))
    config = load_config("fit_scaling", f"source={source},inventory={tmp_path / 'inventory.csv'},axes=compute,"
                                        "n_bootstrap=8")
    config.grid = {"e": (-1.0, 0.0), "a": (0.0, 5.0), "alpha": (0.0, 1.0), "lambda": (0.0, 1.0)}
    summary = launch.launch(config, tmp_path / "out")
    fits = pd.read_csv(tmp_path / "out" / "fits.csv").set_index("group")
    assert set(fits.index) == {"fz", "mh", "average"}
    assert fits.loc["fz", "E"] == pytest.approx(0.45, abs=0.02)
    assert fits.loc["mh", "E"] == pytest.approx(0.55, abs=0.02)
    assert fits.loc["fz", "alpha"] == pytest.approx(0.4, abs=0.1)
    inventory = pd.read_csv(tmp_path / "out" / "inventory.csv").set_index("model")
    np.testing.assert_allclose(inventory.loc[models, "compute"], compute)       # C = D x FLOPs filled in
    bands = pd.read_csv(tmp_path / "out" / "bands.csv")
    assert (bands["lo"] <= bands["hi"] + 1e-12).all()
    with Image.open(summary["plots"]["compute"]) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_inventory_from_the_registry():
    from jaxbrain import inventory
    from jaxbrain.models import registry

    if "cifar_resnet20" not in registry.names():
        pytest.skip("cifar_resnet20 is not registered")
    row = inventory.model_inventory(["cifar_resnet20"]).iloc[0]
    # He et al. 2016 (Table 6): ResNet-20 on CIFAR has 0.27M parameters; ~40.8M multiply-adds per image.
    assert row["params"] == pytest.approx(0.27e6, rel=0.01)
    assert 0.85 * 2 * 40.8e6 < row["flops"] < 1.1 * 2 * 40.8e6
    assert row["compute"] == pytest.approx(row["samples"] * row["flops"])
    with pytest.raises(KeyError, match="not_a_model"):
        inventory.inventory_for(["not_a_model"])
