"""Planted benchmarks generated once into a workdir: generator network -> features -> known responses.

`jaxbrain.data.synthetic` makes a benchmark from given features; this module supplies the features of the
generator network (a registered model built with a seed) and keeps the result as `<data_dir>/<name>.h5` with its
ground truth in `<name>.truth.json`, beside the settings that made it so other settings are never served from it.
"""

from __future__ import annotations

import json
import pathlib

from flax import nnx

from jaxbrain import claims, features, results
from jaxbrain.data import neural, synthetic
from jaxbrain.data.stimulus_set import StimulusSet
from jaxbrain.models import registry

PREFIX = "planted_"


def _generate(spec: synthetic.PlantSpec, settings: dict, path: pathlib.Path, truth_path: pathlib.Path) -> None:
    generator = registry.get(settings["generator"])
    model = generator.build(rngs=nnx.Rngs(settings["seed"]))
    images = synthetic.generated_images(synthetic.images_needed(spec), seed=settings["seed"])
    ids = [f"img{i:05d}" for i in range(len(images))]
    layer_features = features.extract(model, generator, StimulusSet.from_array(images, ids), ids,
                                      sorted(set(spec.roi_layers.values())), keep="raw", progress=False)
    planted = synthetic.plant(spec, layer_features, images, seed=settings["seed"])
    neural.save(planted.dataset, path)
    results.write_json(truth_path, {**planted.truth(), "settings": settings})


def load_planted(name: str, settings: dict, data_dir: str | pathlib.Path) -> tuple[neural.NeuralDataset, dict]:
    """The planted benchmark `name` made with `settings` (generator, seed, scale), generated on first use."""
    if float(settings["scale"]) <= 0:
        raise ValueError(f"planted scale must be > 0, got {settings['scale']}")
    specs = {s.name: s for s in synthetic.default_specs(float(settings["scale"]))}
    if name not in specs:
        raise ValueError(f"unknown planted benchmark {name!r}; known: {sorted(specs)}")
    data_dir = pathlib.Path(data_dir)
    path, truth_path = data_dir / f"{name}.h5", data_dir / f"{name}.truth.json"

    def done() -> bool:
        return path.is_file() and truth_path.is_file()

    claims.do_units([(f"planted benchmark {name}", data_dir / f".{name}.claim", done,
                      lambda: _generate(specs[name], settings, path, truth_path))])
    truth = json.loads(truth_path.read_text())
    if truth.get("settings") != settings:
        raise ValueError(f"{path} was generated with planted settings {truth.get('settings')}, not {settings}; "
                         "use another workdir")
    return neural.load(path), truth
