"""Each of the paper's scoring and scaling presets runs in a tiny mode on planted data."""

import pathlib

import numpy as np
import pandas as pd

from jaxbrain import launch, results

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRID = {"e": (-1.0, 0.0), "a": (0.0, 5.0), "alpha": (0.0, 1.0), "lambda": (0.0, 1.0)}


def test_layer_sweep_preset_projects_and_stores_float16(tmp_path):
    config = launch.load_config(str(ROOT / "configs/paper/layer_sweep.py:scale=0.1,layers=conv1+conv4"))
    with config.unlocked():
        config.progress = False
        config.n_bootstrap = 20
    assert config.features.keep == "projection" and config.features.dtype == "float16"
    summary = launch.launch(config, tmp_path)
    rois = summary["tiny_cnn"]["benchmarks"]["planted_ephys"]["rois"]
    assert {v["layer"] for v in rois.values()} <= {"conv1", "conv4"}
    stored = list((tmp_path / "features").rglob("*.npy"))
    assert stored and all(np.load(p, mmap_mode="r").dtype == np.float16 for p in stored)
    table = results.read_table(tmp_path)
    assert {"rsa_c", "rsa_ve", "cka_c", "cka_ve"} <= set(table.metric)
    assert table[(table.stage == "test") & (table.metric == "r_nc")][["ci_low", "ci_high"]].notna().all().all()


def test_scaling_presets_fix_their_form(tmp_path):
    rng = np.random.default_rng(0)
    models = [f"m{i}" for i in range(6)]
    flops, samples, params = np.logspace(8, 10, 6), np.logspace(3, 6, 6), np.logspace(5, 7, 6)
    rows = [dict(model=m, benchmark="b", subject="all", roi="V1", layer="l", stage="test", metric="r_nc",
                 value=0.6 - 0.3 * (c / 1e12) ** -0.2 + rng.normal(0, 0.001))
            for m, c in zip(models, flops * samples)]
    results.write_csv(tmp_path / "run" / "results.csv", pd.DataFrame(rows))
    results.write_csv(tmp_path / "inventory.csv", pd.DataFrame(dict(model=models, flops=flops, samples=samples,
                                                                      params=params, source="controlled")))
    for axis, form in (("compute", "shifted"), ("samples", "shifted"), ("params", "reduced")):
        config = launch.load_config(str(ROOT / f"configs/paper/scaling.py:axis={axis},source={tmp_path / 'run'},"
                                           f"inventory={tmp_path / 'inventory.csv'},n_bootstrap=4"))
        config.grid = GRID
        summary = launch.launch(config, tmp_path / axis)
        assert config.axes == (axis,) and config.form == form
        assert {fit["form"] for fit in summary["fits"].values()} == {form}
