"""Real data end to end: CIFAR ResNet-20, pretrained vs untrained, on Cowley et al. 2023 macaque V4."""

import pathlib

import numpy as np

from jaxbrain import launch, results

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("layer1.2", "layer2.2", "layer3.0", "layer3.2")


def test_pretrained_resnet20_predicts_v4_better_than_untrained(realdata, tmp_path):
    weights = realdata / "cifar10_resnet_akamaster/weights/resnet20-12fca82f.th"
    config = launch.load_config(
        str(ROOT / f"configs/cowley_v4.py:source={realdata / 'cowley2023_v4'},weights={weights}"))
    with config.unlocked():
        config.progress = False
        config.similarity = False
        for model in config.models.values():
            model.layers = LAYERS
    summary = launch.launch(config, tmp_path)

    pretrained = summary["resnet20_pretrained"]["benchmarks"]["cowley2023_210325"]["rois"]["V4"]
    untrained = summary["resnet20_untrained"]["benchmarks"]["cowley2023_210325"]["rois"]["V4"]
    assert pretrained["layer"] in LAYERS and untrained["layer"] in LAYERS
    # the V4 neurons are reliable (split-half ~0.77): mean ceiling well above half the variance
    assert 60 < pretrained["nc"] < 90
    assert pretrained["r_nc"] > untrained["r_nc"] + 0.1
    assert 0.3 < pretrained["r_nc"] < 1.0

    table = results.read_table(tmp_path)
    test = table[(table.stage == "test") & (table.metric == "r_nc") & (table.subject != "all")]
    assert len(test) == 2 and np.isfinite(test.value).all()
