"""What the parity tests share: moving a PyTorch model's parameters off their init, and the relative error."""

import numpy as np


def randomise(model, seed: int = 0) -> None:
    """Give BN statistics, norm scales, biases, layer scales and class/position tokens non-trivial values so that
    every mapping of a checkpoint is tested (a model at its init hides mistakes behind zeros and ones)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
            elif name.endswith(("gamma", "layer_scale")) or (tensor.ndim == 1 and name.endswith("weight")):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif name.endswith(("cls_token", "pos_embed")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))


def relative_error(ours, theirs: np.ndarray) -> float:
    """max|ours - theirs| / max|theirs|, with NHWC features compared to NCHW and equal-size shapes reshaped."""
    ours = np.asarray(ours)
    if ours.shape != theirs.shape:
        if ours.ndim == 4 and ours.transpose(0, 3, 1, 2).shape == theirs.shape:
            ours = ours.transpose(0, 3, 1, 2)
        elif ours.size == theirs.size:
            ours = ours.reshape(theirs.shape)
        else:
            raise AssertionError(f"shape {ours.shape} vs reference {theirs.shape}")
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
