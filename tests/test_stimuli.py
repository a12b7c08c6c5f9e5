import numpy as np
import pytest
from PIL import Image

from jaxbrain.data import stimuli
from jaxbrain.data.stimulus_set import StimulusSet
from jaxbrain.models.registry import Preprocessing
from stimulus_fakes import FakeStimuli

PREP = Preprocessing(resize=20, crop=16, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

def _images(n, h=24, w=30, seed=0):
    rng = np.random.default_rng(seed)
    return {f"im{k}": rng.integers(0, 256, (h + k % 3, w - k % 2, 3), dtype=np.uint8) for k in range(n)}


def _reference(image, prep):
    """torchvision's eval transform written out: Resize(int) on PIL, CenterCrop, ToTensor, Normalize (float64)."""
    h, w = image.shape[:2]
    if h <= w:
        size = (int(prep.resize * w / h), prep.resize)  # PIL takes (width, height)
    else:
        size = (prep.resize, int(prep.resize * h / w))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), np.float64)
    rh, rw = resized.shape[:2]
    top, left = int(round((rh - prep.crop) / 2)), int(round((rw - prep.crop) / 2))
    crop = resized[top:top + prep.crop, left:left + prep.crop] / 255.0
    return (crop - np.asarray(prep.mean)) / np.asarray(prep.std)


def test_preprocess_matches_the_torchvision_eval_transform():
    for image in [*_images(3).values(), _images(1, h=40, w=21)["im0"]]:
        np.testing.assert_allclose(stimuli.preprocess(image, PREP), _reference(image, PREP), atol=1e-5)


@pytest.fixture(scope="module")
def real_images(realdata):
    """(name, PIL RGB image): ImageNet photos of several sizes, a Cowley V4 stimulus, a 92-images stimulus."""
    import zipfile

    from scipy.io import loadmat

    folder = realdata / "imagenet_samples_100"
    out = [(p.name, Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.JPEG"))[:4]]
    with zipfile.ZipFile(realdata / "cowley2023_v4" / "images_210325.zip") as zf:
        name = sorted(n for n in zf.namelist() if n.endswith(".jpg"))[0]
        with zf.open(name) as f:
            out.append((name, Image.open(f).convert("RGB")))
    mat = loadmat(realdata / "rsatoolbox_92images" / "Kriegeskorte_Neuron2008_supplementalData.mat")
    out.append(("obj01", Image.fromarray(mat["stimuli_92objs"][0, 0]["image"])))
    return out


@pytest.mark.parametrize("interpolation, code", [("bilinear", 2), ("bicubic", 3), ("lanczos", 1)])
def test_preprocess_is_torchvision_pixel_for_pixel_on_real_images(real_images, interpolation, code):
    """Resize(256) + CenterCrop(224) + ToTensor + Normalize; code 1 (PIL's LANCZOS) is what the reference's own
    models get from its interpolation lookup."""
    pytest.importorskip("torch")
    import torchvision.transforms as T

    prep = Preprocessing(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         interpolation=interpolation)
    reference = T.Compose([T.Resize(256, interpolation=code), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(prep.mean, prep.std)])
    for name, image in real_images:
        expected = reference(image).permute(1, 2, 0).numpy()
        got = stimuli.preprocess(np.asarray(image), prep)
        assert got.dtype == np.float32 and got.shape == (224, 224, 3), name
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} ({interpolation})")


def test_grayscale_stimuli_are_replicated_to_rgb_like_pil_convert(realdata, tmp_path):
    """MajajHong2015's images are grayscale: the decoded stimulus and its preprocessing match torchvision's
    pipeline on Image.open(...).convert("RGB"), as the reference loads them."""
    pytest.importorskip("torch")
    import torchvision.transforms as T

    photo = sorted((realdata / "imagenet_samples_100").glob("*.JPEG"))[5]
    (tmp_path / "images").mkdir()
    Image.open(photo).convert("L").save(tmp_path / "images" / "gray.png")
    loaded = StimulusSet.from_folder(tmp_path / "images", ids=["gray"], members=["gray.png"]).load("gray")
    reference_image = Image.open(tmp_path / "images" / "gray.png").convert("RGB")
    np.testing.assert_array_equal(loaded, np.asarray(reference_image))
    assert (loaded[..., 0] == loaded[..., 2]).all()
    prep = Preprocessing(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         interpolation="lanczos")
    reference = T.Compose([T.Resize(256, interpolation=1), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(prep.mean, prep.std)])
    np.testing.assert_array_equal(stimuli.preprocess(loaded, prep),
                                  reference(reference_image).permute(1, 2, 0).numpy())


def test_center_crop_offsets_without_resizing():
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    # (5 - 2) / 2 = 1.5 rounds to 2 (Python rounds half to even), (6 - 2) / 2 = 2
    np.testing.assert_array_equal(stimuli.center_crop(image, 2), image[2:4, 2:4])
    with pytest.raises(ValueError, match="smaller than the crop 7"):
        stimuli.center_crop(image, 7)


def test_preprocess_rejects_non_rgb_uint8():
    with pytest.raises(ValueError, match="uint8"):
        stimuli.preprocess(np.zeros((8, 8, 3), np.float32), PREP)
    with pytest.raises(ValueError, match="unknown interpolation"):
        stimuli.resize_shorter_side(np.zeros((8, 8, 3), np.uint8), 4, "cubic-ish")


def test_batches_follow_the_given_id_order_and_pad_the_last_batch():
    images = _images(7)
    fake = FakeStimuli(images)
    ids = ["im6", "im2", "im0", "im5", "im1", "im3", "im4"]
    batches = list(stimuli.iterate_batches(fake, ids, PREP, 3, num_threads=3))
    assert [b["image"].shape for b in batches] == [(3, 16, 16, 3)] * 3
    index = np.concatenate([b["index"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(index, np.arange(9))
    np.testing.assert_array_equal(mask, [True] * 7 + [False] * 2)
    stacked = np.concatenate([b["image"] for b in batches])
    for k, i in enumerate(ids):
        np.testing.assert_allclose(stacked[k], _reference(images[i], PREP), atol=1e-5)
    np.testing.assert_array_equal(stacked[7:], 0)
    assert fake.loads == 7  # padding rows load nothing


def test_start_and_process_rows_select_the_right_slice():
    fake = FakeStimuli(_images(10))
    ids = fake.ids
    full = np.concatenate([b["image"] for b in stimuli.iterate_batches(fake, ids, PREP, 4)])
    # resume at stimulus 4, this process holding rows 2..4 of every global batch of 4
    part = list(stimuli.iterate_batches(fake, ids, PREP, 4, start=4, rows=(2, 4), num_threads=1))
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in part]), [6, 7, 10, 11])
    np.testing.assert_array_equal(part[0]["image"], full[6:8])
    assert not part[1]["mask"].any()


def test_unknown_ids_are_named():
    with pytest.raises(KeyError, match="nope"):
        stimuli.stimulus_dataset(FakeStimuli(_images(2)), ["im0", "nope"], PREP, 2)


def test_zip_backed_stimulus_set_gives_the_same_batches_as_in_memory(tmp_path):
    images = _images(5, h=22, w=22)
    ids = list(images)
    with __import__("zipfile").ZipFile(tmp_path / "stim.zip", "w") as zf:
        for i, image in images.items():
            path = tmp_path / f"{i}.png"
            Image.fromarray(image).save(path)
            zf.write(path, f"{i}.png")
    zipped = StimulusSet.from_zip(tmp_path / "stim.zip", ids=ids, members=[f"{i}.png" for i in ids])
    in_memory = StimulusSet.from_array([images[i] for i in ids], ids)
    a = np.concatenate([b["image"] for b in stimuli.iterate_batches(zipped, ids, PREP, 2)])
    b = np.concatenate([b["image"] for b in stimuli.iterate_batches(in_memory, ids, PREP, 2)])
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_worker_processes_keep_the_order():
    images = _images(9)
    ids = list(images)[::-1]
    arr = StimulusSet.from_array([images[i] for i in ids], ids)
    threads = np.concatenate([b["image"] for b in stimuli.iterate_batches(arr, ids, PREP, 2)])
    workers = np.concatenate([b["image"] for b in stimuli.iterate_batches(arr, ids, PREP, 2, num_workers=2)])
    np.testing.assert_array_equal(threads, workers)
