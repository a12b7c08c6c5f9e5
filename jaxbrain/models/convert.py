"""Weights between PyTorch state dicts (timm, torchvision, legacy checkpoints) and the Flax NNX models.

The NNX modules name their submodules after the PyTorch module paths of the checkpoints they load, so the
mapping is mechanical: the variable at NNX path ``('layer1', 0, 'conv1', 'kernel')`` is the tensor
``layer1.0.conv1.weight``. Leaf names and layouts:

==========================  ======================  ==============================================
NNX leaf                    PyTorch leaf            layout
==========================  ======================  ==============================================
Conv ``kernel`` (H,W,I,O)   ``weight`` (O,I,H,W)    transpose (3, 2, 0, 1); depthwise: I = 1
Linear ``kernel`` (I,O)     ``weight`` (O,I)        transpose; ViT's fused qkv stays fused (q, k, v)
Norm ``scale``, ``bias``    ``weight``, ``bias``    same
BatchNorm ``mean``, ``var`` ``running_mean/var``    same
other Params                same name               same (``cls_token``, ``pos_embed``, ``gamma``)
==========================  ======================  ==============================================

Loading is all or nothing: every missing, unexpected or mis-shaped tensor is reported by name in one error,
and the model is only touched after the complete new state has been built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flax import nnx

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}

# Tensors that PyTorch checkpoints carry but that hold no model state.
DEFAULT_IGNORED_SUFFIXES = ("num_batches_tracked",)


class WeightLoadError(ValueError):
    """A checkpoint does not match the model; the message lists every offending parameter by name."""


def _variables(model: nnx.Module):
    return nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))


def torch_name(path: tuple) -> str:
    """The PyTorch state-dict key of the NNX variable at ``path``."""
    *modules, leaf = (str(p) for p in path)
    return ".".join([*modules, _LEAF_TO_TORCH.get(leaf, leaf)])


def to_torch_layout(path: tuple, array: np.ndarray) -> np.ndarray:
    """NNX layout -> PyTorch layout for the variable at ``path``."""
    if str(path[-1]) == "kernel":
        if array.ndim == 4:
            return np.transpose(array, (3, 2, 0, 1))
        if array.ndim == 2:
            return array.T
    return array


def from_torch_layout(path: tuple, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> NNX layout for the variable at ``path``."""
    if str(path[-1]) == "kernel":
        if array.ndim == 4:
            return np.transpose(array, (2, 3, 1, 0))
        if array.ndim == 2:
            return array.T
    return array


def _torch_shape(path: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
    if str(path[-1]) == "kernel":
        if len(shape) == 4:
            return (shape[3], shape[2], shape[0], shape[1])
        if len(shape) == 2:
            return (shape[1], shape[0])
    return tuple(shape)


def strip_prefix(state_dict: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Remove ``prefix`` (e.g. ``module.`` from DataParallel) from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def load_state_dict(
    model: nnx.Module,
    state_dict: Mapping[str, np.ndarray],
    *,
    source: str = "<state dict>",
    rename: Callable[[str], str] | None = None,
    ignore: Iterable[str] = DEFAULT_IGNORED_SUFFIXES,
) -> None:
    """Load a PyTorch-layout state dict (name -> array) into ``model`` in place, all or nothing.

    ``rename`` maps each NNX-derived PyTorch name to the key used in ``state_dict`` (for checkpoints whose
    module names differ). Keys ending in one of ``ignore`` are dropped silently. Raises WeightLoadError naming
    ``source`` and every missing, unexpected and mis-shaped tensor; the model is unchanged in that case.
    """
    ignore = tuple(ignore)
    remaining = {k: v for k, v in state_dict.items() if not (ignore and k.endswith(ignore))}
    missing, misshaped, updated = [], [], []
    for path, variable in _variables(model):
        key = torch_name(path)
        if rename is not None:
            key = rename(key)
        if key not in remaining:
            missing.append(key)
            continue
        tensor = np.asarray(remaining.pop(key))
        expected = _torch_shape(path, variable.shape)
        if tuple(tensor.shape) != expected:
            misshaped.append(f"{key}: checkpoint {tuple(tensor.shape)}, model {expected}")
            continue
        if np.issubdtype(tensor.dtype, np.floating) and not np.all(np.isfinite(tensor)):
            misshaped.append(f"{key}: contains NaN or inf")
            continue
        new_value = from_torch_layout(path, tensor).astype(variable.dtype)
        updated.append((path, variable.replace(new_value)))
    unexpected = sorted(remaining)
    if missing or unexpected or misshaped:
        lines = [f"{source}: checkpoint does not match {type(model).__name__}; nothing was loaded."]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items))
        raise WeightLoadError("\n".join(lines))
    nnx.update(model, nnx.from_flat_state(updated))


def to_state_dict(model: nnx.Module, *, rename: Callable[[str], str] | None = None) -> dict[str, np.ndarray]:
    """Export ``model`` as a PyTorch-layout state dict of float arrays (inverse of ``load_state_dict``)."""
    out = {}
    for path, variable in _variables(model):
        key = torch_name(path)
        if rename is not None:
            key = rename(key)
        out[key] = np.ascontiguousarray(to_torch_layout(path, np.asarray(variable[...])))
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict from ``.safetensors`` (no torch needed), or ``.pth``/``.pt``/``.bin``/``.th``.

    Torch pickles are read with torch when it is installed (``pip install jaxbrain[parity]``); without torch the
    restricted reader in ``torch_pickle`` is tried, which handles plain tensor checkpoints. A checkpoint that
    wraps its weights (``{'state_dict': ...}``, ``{'model': ...}``) is unwrapped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightLoadError(f"{path}: corrupt or unreadable safetensors file ({e})") from e
    if not path.endswith((".pth", ".pt", ".bin", ".th", ".ckpt")):
        raise WeightLoadError(f"{path}: unknown checkpoint format (expected .safetensors, .pth, .pt, .bin, .th)")
    obj = _read_torch_pickle(path)
    return _unwrap_state_dict(obj, path)


def _read_torch_pickle(path: str):
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None:
        from jaxbrain.models import torch_pickle

        try:
            return torch_pickle.load(path)
        except torch_pickle.CheckpointError as e:
            raise WeightLoadError(
                f"{e}\nTo read arbitrary PyTorch checkpoints install the `parity` extra: pip install 'jaxbrain[parity]'"
            ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise WeightLoadError(f"{path}: corrupt or truncated checkpoint; torch could not read it ({e})") from e
    return _tensors_to_numpy(obj, torch)


def _tensors_to_numpy(obj, torch):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().float().numpy() if obj.dtype == torch.bfloat16 else obj.detach().cpu().numpy()
    if isinstance(obj, Mapping):
        return {k: _tensors_to_numpy(v, torch) for k, v in obj.items()}
    return obj


def _unwrap_state_dict(obj, path: str) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise WeightLoadError(f"{path}: no state dict (name -> tensor mapping) found in the checkpoint")
    return dict(obj)


def load_checkpoint(
    model: nnx.Module,
    path: str | os.PathLike,
    *,
    rename: Callable[[str], str] | None = None,
    strip: str | None = "module.",
) -> None:
    """Read a checkpoint file and load it into ``model`` in place (all or nothing; errors name the file)."""
    state_dict = read_state_dict(path)
    if strip:
        state_dict = strip_prefix(state_dict, strip)
    load_state_dict(model, state_dict, source=os.fspath(path), rename=rename)


def save_safetensors(model: nnx.Module, path: str | os.PathLike, **kwargs) -> None:
    """Write ``model`` as a PyTorch-layout safetensors file (loadable by timm / ``load_checkpoint``)."""
    from safetensors.numpy import save_file

    save_file(to_state_dict(model, **kwargs), os.fspath(path))
