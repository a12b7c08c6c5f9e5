"""The probe and mapping_scaling experiments from their configs: planted tokens, Cowley V4, kill and resume."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from jaxbrain import launch, probe_runs
from jaxbrain.experiments import mapping_scaling, probe

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_PLANT = ("--config.planted_tokens.n_stimuli=160", "--config.planted_tokens.n_test=40",
              "--config.planted_tokens.n_subjects=2")


def _config(spec: str, *overrides: str):
    config = launch.load_config(str(ROOT / spec))
    with config.unlocked():
        for item in overrides:
            key, value = item.removeprefix("--config.").split("=")
            section, field = key.split(".")
            config[section][field] = type(config[section][field])(value)
    return config


def test_subsample_rows_follow_seeded_permutation():
    rows = probe_runs.subsample(100, 0.3, seed=2)
    np.testing.assert_array_equal(rows, np.sort(np.random.default_rng(2).permutation(100)[:30]))
    assert probe_runs.subsample(100, 1.0, seed=2) is None
    assert len(probe_runs.subsample(100, 0.01, seed=0, min_pairs=10)) == 10
    with pytest.raises(ValueError, match="fraction"):
        probe_runs.subsample(100, 0.0, seed=0)


def test_mapping_sweep_on_planted_tokens(tmp_path):
    config = _config("configs/mapping_scaling.py:local=true,readouts=LINEAR-SS+ATTENTION-MS,seeds=0+1,"
                     "fractions=0.25+1.0,n_bootstrap=10,epochs=1", *TINY_PLANT)
    summary = mapping_scaling.run(config, tmp_path)
    table = pd.read_csv(tmp_path / "readouts.csv")
    assert set(table.model) == {"LINEAR-SS", "ATTENTION-MS"} and set(table.fraction) == {0.25, 1.0}
    assert sorted(table[table.model == "ATTENTION-MS"].n_pairs.unique()) == [30, 120]
    fits = pd.read_csv(tmp_path / "mapping_fits.csv")
    assert set(fits.model) == {"LINEAR-SS", "ATTENTION-MS"} and np.isfinite(fits.alpha).all()
    assert set(summary["fits"]) == set(fits.model)
    for name in ("mapping_scaling.png", "pareto.png", "table2.md", "table_s4.csv"):
        assert (tmp_path / name).is_file(), name
    s4 = pd.read_csv(tmp_path / "table_s4.csv").set_index("model")
    # MS: one system for both subjects; its parameters are counted once
    ms = table[(table.model == "ATTENTION-MS") & (table.fraction == 1.0)]
    assert ms.system.unique().tolist() == ["all"] and s4.loc["ATTENTION-MS", "parameters_gmean"] == pytest.approx(
        ms.parameters.iloc[0])
    results = pd.read_csv(tmp_path / "results.csv")
    assert {"r_nc", "parameters", "n_pairs"} <= set(results.metric)
    again = mapping_scaling.run(config, tmp_path)  # every unit done: read back, same numbers
    assert again["readouts"] == summary["readouts"]


def test_probe_on_cowley_v4_one_subject_ms_equals_ss(tmp_path, realdata):
    config = launch.load_config(str(ROOT / "configs/paper/probes_cowley_v4.py:local=true,seeds=0,epochs=1,"
                                         "readouts=LINEAR-SS+ATTENTION-SS+ATTENTION-MS,layers=layer3.2"))
    assert config.experiment == "probe"
    summary = probe.run(config, tmp_path)
    table = pd.read_csv(tmp_path / "readouts.csv")
    assert summary["subjects"] == {"cowley2023_210325": 1} and set(table.roi) == {"V4"}
    ss, ms = (table[table.model == m].iloc[0] for m in ("ATTENTION-SS", "ATTENTION-MS"))
    assert ss.r_nc == ms.r_nc and ss.parameters == ms.parameters
    linear = table[table.model == "LINEAR-SS"].iloc[0]
    assert linear.r_nc > 0.3 and linear.parameters == (8 * 8 * 64 + 1) * linear.n_targets


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    return [int(p.name) for p in workdir.glob("checkpoints/*/all/*") if p.name.isdigit()]


def test_probe_run_resumes_after_kill(tmp_path):
    spec = "configs/probe.py:local=true,readouts=ATTENTION-MS,seeds=0,epochs=10,batch_size=16"
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "jaxbrain.launch", "--config", str(ROOT / spec), *TINY_PLANT,
                                "--workdir", str(killed)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not _checkpoint_steps(killed) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps = _checkpoint_steps(killed)
    assert steps and max(steps) < 10, steps  # killed mid-run, after at least one epoch was saved
    assert not (killed / "readouts.csv").exists()
    config = _config(spec, *TINY_PLANT)
    probe.run(config, killed)
    fresh = tmp_path / "fresh"
    probe.run(config, fresh)
    columns = ["model", "subject", "r", "r_nc", "final_loss", "parameters"]
    pd.testing.assert_frame_equal(pd.read_csv(killed / "readouts.csv")[columns],
                                  pd.read_csv(fresh / "readouts.csv")[columns])
