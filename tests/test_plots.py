"""Each figure and table renders to a valid file with the expected content."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxbrain import plots, scaling


def results_rows(models=("net_a", "net_b"), benchmarks=(("fz", ("V1", "V2")), ("mh", ("IT",))), subjects=("s1", "s2")):
    """A small results.csv table: cv rows for 4 layers per model and test rows for the committed layer."""
    rows = []
    rng = np.random.default_rng(0)
    for m, model in enumerate(models):
        for bench, rois in benchmarks:
            for roi in rois:
                for subject in subjects:
                    for i, depth in enumerate((0.0, 1 / 3, 2 / 3, 1.0)):
                        rows.append(dict(model=model, benchmark=bench, subject=subject, roi=roi, layer=f"block{i}",
                                         depth=depth, stage="cv", metric="r_nc",
                                         value=0.3 + 0.1 * m + 0.2 * np.sin(3 * depth) + 0.01 * rng.normal(),
                                         n_targets=10, alpha=100.0, seed=0))
                    for metric, value in (("r_nc", 0.5 + 0.1 * m), ("r", 0.4 + 0.1 * m)):
                        rows.append(dict(model=model, benchmark=bench, subject=subject, roi=roi, layer="block2",
                                         depth=2 / 3, stage="test", metric=metric, value=value, n_targets=10,
                                         alpha=100.0, seed=0))
    return pd.DataFrame(rows)


def check_png(path, min_size=(200, 150)):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5          # not a blank canvas
    return image.size


def test_layer_profile_renders_one_panel_per_benchmark_roi(tmp_path):
    table = results_rows()
    width, height = check_png(plots.layer_profile(table, tmp_path / "profile.png"))
    assert width > height                           # three panels side by side
    with pytest.raises(ValueError, match="stage 'cv'"):
        plots.layer_profile(table[table.stage == "test"], tmp_path / "x.png")


def test_scaling_curves_renders_points_curve_and_band(tmp_path):
    rng = np.random.default_rng(0)
    fits, frames = {}, []
    for group, (E, alpha) in {"fz": (0.4, 0.3), "mh": (0.5, 0.5)}.items():
        X = np.logspace(12, 17, 8)
        frames.append(pd.DataFrame(dict(x=X, score=1 - scaling.law(X / 1e12, E, 0.4, alpha) + rng.normal(0, .01, 8),
                                        group=group)))
        boot = np.array([[E + d, 0.4, alpha, np.nan] for d in (-0.02, 0.0, 0.02)])
        fits[group] = scaling.PowerLawFit(form="reduced", E=E, A=0.4, alpha=alpha, lam=None, loss=0.0, x_scale=1e12,
                                          delta=1e-3, losses_by_form={}, bootstrap=boot,
                                          bootstrap_losses=np.zeros(3), n_rows=8)
    path = plots.scaling_curves(pd.concat(frames), fits, tmp_path / "scaling.png", xlabel="compute")
    check_png(path)
    with pytest.raises(ValueError, match="log axis"):
        plots.scaling_curves(pd.DataFrame(dict(x=[0.0], score=[0.1], group=["a"])), {}, tmp_path / "bad.png")


def test_readout_table_markdown_and_csv(tmp_path):
    md_path, csv_path = plots.readout_table(results_rows(), tmp_path / "table")
    frame = pd.read_csv(csv_path)
    assert list(frame["model"]) == ["net_b", "net_a"]          # sorted by the mean, best first
    assert set(frame.columns) == {"model", "fz V1", "fz V2", "mh IT", "mean"}
    assert frame.loc[frame.model == "net_b", "mean"].item() == pytest.approx(0.6)
    text = md_path.read_text()
    assert text.startswith("| model |") and "**0.600**" in text and "net_a" in text
