"""RDM benchmarks: per-subject split-half similarity matrices scored per layer, ceilings leave one subject out."""

import numpy as np
import pandas as pd
from PIL import Image

from jaxbrain import launch, pipeline
from jaxbrain.data.sources.generic import load_rdm_folder
from jaxbrain.features import Gram


def _off_diagonal_r(a, b):
    mask = ~np.eye(len(a), dtype=bool)
    return np.corrcoef(a[mask], b[mask])[0, 1]


def _folder(tmp_path, layer_features, true_layer, n_subjects=3, images=None, seed=0):
    rng = np.random.default_rng(seed)
    n = len(next(iter(layer_features.values())))
    ids = [f"im{k:02d}" for k in range(n)]
    table = pd.DataFrame({"stimulus_id": ids})
    if images is not None:
        (tmp_path / "img").mkdir()
        for k, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / "img" / f"{ids[k]}.png")
        table["image"] = [f"img/{i}.png" for i in ids]
    table.to_csv(tmp_path / "stimuli.csv", index=False)
    truth = np.corrcoef(layer_features[true_layer])
    for s in range(n_subjects):
        noisy = truth + 0.3 * rng.standard_normal(truth.shape)  # split-half RSMs need not be symmetric
        np.save(tmp_path / f"rsm_sub{s}_IT.npy", noisy)
    return load_rdm_folder(tmp_path, symmetric=False)


def test_layers_scored_against_subject_matrices(tmp_path):
    rng = np.random.default_rng(1)
    layers = {"early": rng.standard_normal((25, 30)), "late": rng.standard_normal((25, 30))}
    rdms = _folder(tmp_path, layers, "late")
    scores = pipeline.score_rdm_layers(layers, rdms)
    assert scores.committed == {"IT": "late"}
    matrices = rdms.subject_matrices("IT")
    for s, subject in enumerate(["sub0", "sub1", "sub2"]):
        others = np.delete(matrices, s, axis=0).mean(axis=0)
        ceiling = _off_diagonal_r(matrices[s], others)
        raw = _off_diagonal_r(np.corrcoef(layers["late"]), matrices[s])
        got = scores.per_layer["late"][(subject, "IT")]
        np.testing.assert_allclose(got.cv_r[0], raw, rtol=1e-10)
        np.testing.assert_allclose(got.cv_r_nc[0], np.sign(raw) * (raw / ceiling) ** 2, rtol=1e-10)
    k = {name: x @ x.T for name, x in layers.items()}
    by_gram = pipeline.score_rdm_layers({name: Gram(k[name], x.sum(1), x.shape[1]) for name, x in layers.items()},
                                        rdms)
    np.testing.assert_allclose(by_gram.per_layer["late"][("sub1", "IT")].cv_r,
                               scores.per_layer["late"][("sub1", "IT")].cv_r, rtol=1e-9)
    rows = [r for r in scores.to_rows("m") if r["stage"] == "test" and r["subject"] == "all"]
    mean_r = np.mean([scores.per_layer["late"][(s, "IT")].cv_r[0] for s in ("sub0", "sub1", "sub2")])
    mean_ceiling = np.mean([np.sqrt(scores.ceilings[(s, "IT")][0] / 100) for s in ("sub0", "sub1", "sub2")])
    r_nc = next(r["value"] for r in rows if r["metric"] == "r_nc")
    np.testing.assert_allclose(r_nc, (mean_r / scores.rdm_ceilings["IT"]) ** 2, rtol=1e-10)
    assert abs(scores.rdm_ceilings["IT"] - mean_ceiling) < 0.2


def test_rdm_benchmark_through_the_score_experiment(tmp_path):
    from jaxbrain.data import synthetic

    images = synthetic.generated_images(24, seed=3)
    pixels = images.reshape(24, -1).astype(float)
    rdms_dir = tmp_path / "rdms"
    rdms_dir.mkdir()
    _folder(rdms_dir, {"pixels": pixels}, "pixels", images=images)
    config = launch.load_config("configs/score.py:layers=conv1+pool")
    with config.unlocked():
        config.benchmarks = (f"rdm:{rdms_dir}?symmetric=false",)
        config.progress = False
    summary = launch.launch(config, tmp_path / "run")
    rois = summary["tiny_cnn"]["benchmarks"]["rdms"]["rois"]
    assert set(rois) == {"IT"} and rois["IT"]["layer"] in ("conv1", "pool")
    assert 0 < rois["IT"]["nc"] <= 100
