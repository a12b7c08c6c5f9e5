"""Prepared image folders (tfds ArrayRecord), per-class subset views and the Grain train/eval pipelines."""

import io
import json
import pathlib
import zipfile

import grain
import numpy as np
import pytest
from PIL import Image

from jaxbrain import launch
from jaxbrain.models import registry
from jaxbrain.train import augment, image_folder, input_pipeline

CIFAR_ORDER = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PREP32 = registry.Preprocessing(resize=36, crop=32, mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD)


def _imagenet_tree(realdata, root: pathlib.Path, per_class: int = 4) -> pathlib.Path:
    """10 classes from the first 10 photos; each class holds crops of its photo at different corners."""
    photos = sorted((realdata / "imagenet_samples_100").glob("*.JPEG"))[:10]
    for photo in photos:
        folder = root / photo.stem.split("_")[0]
        folder.mkdir(parents=True)
        image = Image.open(photo).convert("RGB")
        w, h = image.size
        for k in range(per_class):
            left, top = (k % 2) * w // 3, (k // 2) * h // 3
            crop = image.crop((left, top, left + 2 * w // 3, top + 2 * h // 3)).resize((40, 30))
            crop.save(folder / f"{k}.png" if k == 0 else folder / f"{k}.jpg")
    return root


def _cifar_zips(realdata, root: pathlib.Path, per_class: int = 6) -> pathlib.Path:
    """The CIFAR-10 per-class zips, cut to their first ``per_class`` JPEGs (same member names)."""
    root.mkdir(parents=True)
    for source in sorted((realdata / "cifar10_resnet_akamaster" / "cifar10_test_jpg").glob("*.zip")):
        with zipfile.ZipFile(source) as whole, zipfile.ZipFile(root / source.name, "w") as part:
            for member in sorted(m for m in whole.namelist() if m.endswith(".jpg"))[:per_class]:
                part.writestr(member, whole.read(member))
    return root


@pytest.fixture(scope="module")
def cifar(realdata, tmp_path_factory):
    base = tmp_path_factory.mktemp("cifar")
    zips = _cifar_zips(realdata, base / "zips")
    return zips, image_folder.prepare_image_folder(zips, base / "prepared", validation_fraction=1 / 6)


# ---------------------------------------------------------------- prepared directories


def test_cli_prepares_a_class_folder_tree_and_skips_a_rerun(realdata, tmp_path):
    tree = _imagenet_tree(realdata, tmp_path / "tree")
    argv = [f"--config=configs/prepare_images.py:source_dir={tree},name=tiny,validation_fraction=0.25",
            f"--workdir={tmp_path / 'run'}"]
    assert launch.main(argv) == 0
    out = tmp_path / "run" / "tiny"
    prepared = image_folder.load_prepared(out)
    classes = sorted(p.name for p in tree.iterdir())
    assert prepared.class_names == tuple(classes)
    assert prepared.split_sizes == {"train": 30, "validation": 10}
    import tensorflow_datasets as tfds

    records = tfds.builder_from_directory(str(out)).as_data_source(
        "train", decoders={"image": tfds.decode.SkipDecoding()})
    source = prepared.source("train")
    for i in range(len(source)):
        record = records[i]
        name = record["file_name"].decode()
        assert record["image"] == (tree / name).read_bytes() == source[i]["image"]
        assert classes[record["label"]] == name.split("/")[0] == classes[source.labels[i]]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tiny"]["fingerprint"] == prepared.fingerprint
    stamp = (out / "prepared.json").stat().st_mtime_ns
    assert launch.main(argv) == 0
    assert (out / "prepared.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "log.txt", "summary.json", "tiny"]


def test_cifar_zips_keep_the_cifar_label_order_and_a_seeded_held_out_split(cifar, tmp_path):
    zips, prepared = cifar
    assert prepared.class_names == CIFAR_ORDER
    for path in zips.glob("*.zip"):  # test_<label>_<class>.zip
        _, label, name = path.stem.split("_", 2)
        assert prepared.class_names.index(name) == int(label)
    assert prepared.split_sizes == {"train": 50, "validation": 10}
    val = prepared.source("validation")
    np.testing.assert_array_equal(np.sort(val.labels), np.arange(10))
    plan, _ = image_folder.plan_splits(zips, 1 / 6, split_seed=0)
    other, _ = image_folder.plan_splits(zips, 1 / 6, split_seed=1)
    assert [f.name for f in plan["validation"]] != [f.name for f in other["validation"]]
    decoded = augment.decode(val[0]["image"])
    assert decoded.size == (32, 32)


def test_undecodable_images_are_all_listed_and_nothing_is_written(realdata, tmp_path):
    tree = _imagenet_tree(realdata, tmp_path / "tree", per_class=2)
    classes = sorted(p.name for p in tree.iterdir())
    good = (tree / classes[0] / "1.jpg").read_bytes()
    (tree / classes[0] / "1.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (tree / classes[3] / "9.jpg").write_bytes(b"this is not an image")
    with pytest.raises(image_folder.ImageFolderError) as err:
        image_folder.prepare_image_folder(tree, tmp_path / "out")
    message = str(err.value)
    assert "2 unreadable or undecodable image(s)" in message and "\n" not in message
    assert f"{classes[0]}/1.jpg" in message and f"{classes[3]}/9.jpg" in message
    assert not (tmp_path / "out").exists()


def test_empty_classes_missing_and_flat_folders_are_clear_errors(realdata, tmp_path):
    tree = _imagenet_tree(realdata, tmp_path / "tree", per_class=1)
    (tree / "n99999999").mkdir()
    (tree / "n88888888").mkdir()
    with pytest.raises(image_folder.ImageFolderError, match="2 empty class .*n88888888, n99999999"):
        image_folder.prepare_image_folder(tree, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        image_folder.prepare_image_folder(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(image_folder.ImageFolderError, match="found 100 images at the top level"):
        image_folder.plan_splits(realdata / "imagenet_samples_100")
    with pytest.raises(image_folder.ImageFolderError, match="not a prepared image directory"):
        image_folder.load_prepared(tree)


def test_changed_content_needs_overwrite_and_a_failed_build_leaves_nothing(realdata, tmp_path, monkeypatch):
    tree = _imagenet_tree(realdata, tmp_path / "tree", per_class=2)
    out = tmp_path / "out"
    first = image_folder.prepare_image_folder(tree, out, validation_fraction=0.0)
    assert first.split_sizes == {"train": 20}
    victim = next(tree.glob("*/1.jpg"))
    Image.new("RGB", (20, 20), (250, 0, 0)).save(victim)
    with pytest.raises(image_folder.ImageFolderError, match="prepared from other content or settings"):
        image_folder.prepare_image_folder(tree, out, validation_fraction=0.0)

    original = image_folder._write_prepared

    def crash(tmp, *args):
        original(tmp, *args)
        raise RuntimeError("killed before the rename")

    monkeypatch.setattr(image_folder, "_write_prepared", crash)
    with pytest.raises(RuntimeError, match="killed"):
        image_folder.prepare_image_folder(tree, out, validation_fraction=0.0, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tree"]
    assert image_folder.load_prepared(out).fingerprint == first.fingerprint
    monkeypatch.setattr(image_folder, "_write_prepared", original)
    (tmp_path / ".out.tmp-killed" / "tfds").mkdir(parents=True)  # what a SIGKILL during a build leaves
    second = image_folder.prepare_image_folder(tree, out, validation_fraction=0.0, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tree"]
    assert second.fingerprint != first.fingerprint
    source = second.source("train")
    names = {augment.decode(source[i]["image"]).size for i in range(len(source))}
    assert (20, 20) in names


def test_class_subsets_are_seeded_nested_views(cifar):
    _, prepared = cifar
    train = prepared.source("train")
    views = {k: image_folder.class_subset(train, k, seed=3) for k in (1, 3, 10)}
    assert [views[k].num_images for k in (1, 3, 10)] == [10, 30, 50]  # 5 per class: 10 takes them all
    for k in (1, 3):
        np.testing.assert_array_equal(np.bincount(views[k].labels, minlength=10), np.full(10, k))
    assert set(views[1].indices) <= set(views[3].indices) <= set(views[10].indices)
    assert views[3].source is train and np.all(np.diff(views[3].indices) > 0)
    assert views[3][4]["image"] == train[int(views[3].indices[4])]["image"]
    other_seed = image_folder.class_subset(train, 3, seed=4)
    assert set(other_seed.indices) != set(views[3].indices)
    assert len(image_folder.class_subset(train, "all")) == len(train) == 50
    with pytest.raises(ValueError, match="samples_per_class"):
        image_folder.class_subset(train, 0)


# ---------------------------------------------------------------- pipelines


class _Numbered:
    """N tiny distinct images; the label of record i is i, so labels identify records."""

    def __init__(self, n: int):
        self.labels = np.arange(n, dtype=np.int32)
        self.class_names = tuple(str(i) for i in range(n))
        self.num_classes = n
        self._images = []
        for i in range(n):
            buffer = io.BytesIO()
            Image.new("RGB", (10, 12), (i * 10 % 256, 255 - i, 7 * i % 256)).save(buffer, "PNG")
            self._images.append(buffer.getvalue())

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self._images[i], "label": int(self.labels[i])}


PREP8 = registry.Preprocessing(resize=8, crop=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_epochs_visit_every_example_once_in_a_new_order_each_epoch():
    source = _Numbered(20)
    recipe = augment.recipe("resnet", PREP8)
    per_epoch = list(input_pipeline.train_iterator(source, recipe, global_batch_size=6, num_epochs=2,
                                                   process_index=0, process_count=1))
    assert len(per_epoch) == 2 * (20 // 6)
    first = np.concatenate([b["label"] for b in per_epoch[:3]])
    second = np.concatenate([b["label"] for b in per_epoch[3:]])
    assert len(set(first)) == 18 and len(set(second)) == 18 and not np.array_equal(first, second)
    endless = input_pipeline.train_iterator(source, recipe, global_batch_size=4, seed=1,
                                            process_index=0, process_count=1)
    stream = np.concatenate([b["label"] for b in _take(endless, 10)])
    assert sorted(stream[:20]) == list(range(20)) and sorted(stream[20:]) == list(range(20))
    assert not np.array_equal(stream[:20], stream[20:])
    assert set(per_epoch[0]) == {"image", "label"} and per_epoch[0]["image"].shape == (6, 8, 8, 3)


def test_global_batch_does_not_depend_on_the_number_of_processes(cifar):
    _, prepared = cifar
    source = prepared.source("train")
    recipe = augment.recipe("deit", PREP32)
    batches = {}
    for count in (1, 2, 4):
        parts = [_take(input_pipeline.train_iterator(source, recipe, global_batch_size=8, seed=5,
                                                     process_index=p, process_count=count), 3)
                 for p in range(count)]
        batches[count] = [{k: np.concatenate([part[step][k] for part in parts]) for k in parts[0][step]}
                          for step in range(3)]
    for count in (2, 4):
        for one, many in zip(batches[1], batches[count]):
            for key in ("image", "label", "label_probs"):
                np.testing.assert_array_equal(one[key], many[key])
    batch = batches[1][0]
    assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
    assert batch["label_probs"].shape == (8, 10) and batch["label_probs"].dtype == np.float32
    np.testing.assert_allclose(batch["label_probs"].sum(1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="even"):
        input_pipeline.train_dataset(source, recipe, global_batch_size=6, process_index=0, process_count=2)


def test_resuming_from_a_saved_state_reproduces_the_batches(cifar, tmp_path):
    import orbax.checkpoint as ocp

    _, prepared = cifar
    subset = image_folder.class_subset(prepared.source("train"), 3, seed=0)
    recipe = augment.recipe("deit", PREP32)

    def fresh():
        return input_pipeline.train_iterator(subset, recipe, global_batch_size=6, seed=2, process_index=0,
                                             process_count=1)

    run = fresh()
    _take(run, 2)
    state = run.get_state()
    manager = ocp.CheckpointManager(tmp_path / "ckpt")
    manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(run)))
    manager.wait_until_finished()
    expected = _take(run, 3)

    resumed = fresh()
    resumed.set_state(state)
    restored = manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh())))
    for it in (resumed, restored["data"]):
        for want, got in zip(expected, _take(it, 3)):
            assert set(got) == {"image", "label", "label_probs"}
            for key in want:
                np.testing.assert_array_equal(want[key], got[key])


@pytest.mark.slow  # each Grain worker imports jax and tfds: about a minute on the shared 2-core machine
def test_worker_processes_give_the_same_batches_and_resume(cifar):
    _, prepared = cifar
    source = prepared.source("train")
    recipe = augment.recipe("resnet", PREP32, label_smoothing=0.1)
    kwargs = dict(global_batch_size=4, seed=0, process_index=0, process_count=1)
    threads = _take(input_pipeline.train_iterator(source, recipe, **kwargs), 4)
    workers = input_pipeline.train_iterator(source, recipe, worker_count=2, **kwargs)
    got = _take(workers, 2)
    state = workers.get_state()
    resumed = input_pipeline.train_iterator(source, recipe, worker_count=2, **kwargs)
    resumed.set_state(state)
    got += _take(resumed, 2)
    for want, batch in zip(threads, got):
        for key in ("image", "label", "label_probs"):
            np.testing.assert_array_equal(want[key], batch[key])


def test_subset_views_feed_the_pipeline(cifar):
    _, prepared = cifar
    subset = image_folder.class_subset(prepared.source("train"), 1, seed=0)
    epoch = list(input_pipeline.train_iterator(subset, augment.recipe("resnet", PREP32), global_batch_size=10,
                                               num_epochs=1, process_index=0, process_count=1))
    assert len(epoch) == 1
    assert sorted(epoch[0]["label"]) == list(range(10))


def test_eval_batches_are_ordered_padded_and_masked(cifar):
    _, prepared = cifar
    val = prepared.source("validation")
    parts = [list(input_pipeline.eval_iterator(val, PREP32, global_batch_size=4, process_index=p,
                                               process_count=2)) for p in range(2)]
    assert [len(p) for p in parts] == [3, 3]
    glued = {k: np.concatenate([np.concatenate([parts[0][s][k], parts[1][s][k]]) for s in range(3)])
             for k in ("image", "label", "mask", "index")}
    np.testing.assert_array_equal(glued["mask"], np.arange(12) < 10)
    np.testing.assert_array_equal(glued["index"][:10], np.arange(10))
    np.testing.assert_array_equal(glued["label"][:10], val.labels)
    assert not glued["image"][10:].any() and glued["label"].dtype == np.int32
    for i in (0, 7):
        expected = augment.eval_transform(augment.decode(val[i]["image"]), PREP32)
        np.testing.assert_array_equal(glued["image"][i], expected)
