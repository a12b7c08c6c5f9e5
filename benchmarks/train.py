"""Hybrid fine-tuning step speed: jaxbrain's jitted train step against the same step in PyTorch.

  python -m benchmarks.train [--models vit_s16,resnet50] [--task 32] [--neural 16] [--iters 5] [--threads 2]
      CPU, float32, 224 px: images/s of one hybrid step (task and neural batch through the model in two
      forward passes, cross-entropy on the task batch, a frozen readout (T = 100 targets) on the flattened activations of a
      middle layer of the neural rows, MSE, backward, AdamW update), jaxbrain (:class:`jaxbrain.train.step.Trainer`
      with :class:`jaxbrain.train.hybrid.HybridLoss`) against timm/torchvision in PyTorch with the same shapes,
      threads and precision; prints the ratio.

  python -m benchmarks.train --device [--models vit_b16] [--task 512] [--neural 256] [--iters 20]
      On a GPU: the same step in bfloat16 on cached uint8 inputs (converted on device), step time, images/s and
      MFU = the step's FLOPs from XLA's cost analysis / (step time x the card's dense bf16 peak, H100/H200 SXM:
      989 TFLOP/s, or --peak-tflops), against PyTorch with bf16 autocast, torch.compile and SDPA.
      Expected on an H100/H200: under 3 minutes including compilation. ``--smoke`` runs the device mode on CPU
      with a tiny ViT at small batches (a check that the script works, not a measurement).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

PEAK_BF16_TFLOPS = 989.0
LAYERS = {"vit_s16": "blocks.6", "vit_b16": "blocks.6", "resnet50": "layer3.5", "vit_ti16": "blocks.6"}
TORCH_NAMES = {"vit_s16": "vit_small_patch16_224", "vit_b16": "vit_base_patch16_224", "vit_ti16":
               "vit_tiny_patch16_224", "resnet50": "resnet50"}
N_TARGETS = 100


def _timed(step, iters):
    step()  # compile / warm up
    step()
    times = []
    for _ in range(iters):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def jax_step(name: str, n_task: int, n_neural: int, dtype: str, uint8: bool, size: int = 224):
    """(run one step, FLOPs of the compiled step) for jaxbrain's hybrid step."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxbrain.models import registry
    from jaxbrain.train import hybrid, optim
    from jaxbrain.train import mesh as mesh_lib
    from jaxbrain.train.step import Trainer

    spec = registry.get(name)
    model = spec.build(rngs=nnx.Rngs(0), num_classes=1000)
    layer = LAYERS[name]
    _, out = jax.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    width = int(np.prod(out[layer].shape[1:]))
    rng = np.random.default_rng(0)
    readouts = {"s/roi": {"weight": jnp.asarray(rng.normal(0, 1e-3, (width, N_TARGETS)), jnp.float32),
                          "bias": jnp.zeros(N_TARGETS, jnp.float32)}}
    mesh = mesh_lib.make_mesh()
    opt = optim.OptimizerConfig(lr=1e-5, total_steps=1000, warmup_steps=10, weight_decay=0.05)
    trainer = Trainer(model, optim.adamw(opt), hybrid.HybridLoss((("s/roi", layer),)), mesh, compute_dtype=dtype)
    image_dtype = np.uint8 if uint8 else np.float32
    local = {"task_image": rng.integers(0, 255, (n_task, size, size, 3)).astype(image_dtype),
             "task_label": rng.integers(0, 1000, n_task).astype(np.int32),
             "image": rng.integers(0, 255, (n_neural, size, size, 3)).astype(image_dtype),
             "target/s/roi": rng.normal(size=(n_neural, N_TARGETS)).astype(np.float32),
             "present/s/roi": np.ones(n_neural, np.float32)}
    batch = mesh_lib.global_batch(local, mesh)
    if uint8:  # cached uint8 inputs, scaled on device
        batch = {k: (v.astype(jnp.float32) / 127.5 - 1 if v.dtype == jnp.uint8 else v) for k, v in batch.items()}
    holder = {"state": trainer.init_state()}
    with jax.set_mesh(mesh):
        compiled = trainer._step.lower(holder["state"], batch, readouts).compile()  # noqa: SLF001
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])

    def run():
        holder["state"], metrics = trainer.step(holder["state"], batch, readouts)
        jax.block_until_ready(metrics["loss"])

    return run, flops


def torch_step(name: str, n_task: int, n_neural: int, device: str, bf16: bool, compile_model: bool):
    """One step of the same hybrid objective in PyTorch (timm ViT / torchvision ResNet)."""
    import timm
    import torch
    import torchvision

    model = (torchvision.models.resnet50() if name == "resnet50" else timm.create_model(TORCH_NAMES[name]))
    model = model.to(device).train()
    captured = {}
    module = dict(model.named_modules())[LAYERS[name]]
    module.register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224, device=device))
    width = captured["x"][0].numel()
    weight = (torch.randn(width, N_TARGETS, device=device) * 1e-3)
    bias = torch.zeros(N_TARGETS, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.05)
    forward = torch.compile(model) if compile_model else model
    x = torch.randn(n_task + n_neural, 3, 224, 224, device=device)
    labels = torch.randint(0, 1000, (n_task,), device=device)
    targets = torch.randn(n_neural, N_TARGETS, device=device)

    def run():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x[:n_task])
            forward(x[n_task:])
            feats = captured["x"].reshape(n_neural, -1).float()
            ce = torch.nn.functional.cross_entropy(logits.float(), labels)
            mse = ((feats @ weight + bias - targets) ** 2).mean()
            loss = 0.1 * ce + 100.0 * mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def cpu_table(models, n_task, n_neural, iters, threads):
    import torch

    torch.set_num_threads(threads)
    print(f"CPU hybrid step, float32, batch {n_task} + {n_neural}, {threads} threads")
    print(f"{'model':10s} {'jaxbrain img/s':>15s} {'PyTorch img/s':>14s} {'ratio':>6s}")
    for name in models:
        jax_run, _ = jax_step(name, n_task, n_neural, "float32", uint8=False)
        jax_rate = (n_task + n_neural) / _timed(jax_run, iters)
        torch_rate = (n_task + n_neural) / _timed(torch_step(name, n_task, n_neural, "cpu", False, False), iters)
        print(f"{name:10s} {jax_rate:15.2f} {torch_rate:14.2f} {jax_rate / torch_rate:6.2f}", flush=True)


def device_report(models, n_task, n_neural, iters, peak_tflops, smoke):
    print(f"device hybrid step, bfloat16, batch {n_task} + {n_neural}, cached uint8 inputs")
    for name in models:
        jax_run, flops = jax_step(name, n_task, n_neural, "bfloat16", uint8=True)
        seconds = _timed(jax_run, iters)
        mfu = flops / (seconds * peak_tflops * 1e12)
        line = (f"{name}: jaxbrain {seconds * 1e3:.1f} ms/step, {(n_task + n_neural) / seconds:.0f} img/s, "
                f"{flops / 1e12:.2f} TFLOP/step, MFU {100 * mfu:.1f} %")
        if not smoke:
            torch_seconds = _timed(torch_step(name, n_task, n_neural, "cuda", True, True), iters)
            line += f"; PyTorch {torch_seconds * 1e3:.1f} ms/step; ratio {torch_seconds / seconds:.2f}"
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None)
    parser.add_argument("--task", type=int, default=None)
    parser.add_argument("--neural", type=int, default=None)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="device mode on CPU, tiny ViT, small batch")
    parser.add_argument("--peak-tflops", type=float, default=PEAK_BF16_TFLOPS)
    args = parser.parse_args()
    if args.device or args.smoke:
        models = (args.models or ("vit_ti16" if args.smoke else "vit_b16")).split(",")
        device_report(models, args.task or (4 if args.smoke else 512), args.neural or (2 if args.smoke else 256),
                      1 if args.smoke else args.iters, args.peak_tflops, args.smoke)
    else:
        cpu_table((args.models or "vit_s16,resnet50").split(","), args.task or 32, args.neural or 16, args.iters,
                  args.threads)


if __name__ == "__main__":
    main()
