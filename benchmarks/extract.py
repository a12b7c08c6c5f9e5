"""Feature-extraction speed and memory: jaxbrain against timm in PyTorch, and peak host memory.

Four modes:

  python benchmarks/extract.py [--models vit_s16,resnet50,convnext_s] [--batch 32] [--iters 5]
      CPU images/s at 224 px: the jitted jaxbrain forward (logits; and every candidate layer mean-pooled, the
      extraction forward), against timm's forward in PyTorch with the same number of threads, run in a
      separate process (``--torch-python``, default: this interpreter if it has torch and timm, else
      /work/venv-parity/bin/python). With ``--end-to-end N`` also ``features.extract`` end to end on N
      synthetic images, decoding each and from a warm stimulus cache, against the forward-only rate.

  python benchmarks/extract.py --projection [--models vit_s16,convnext_s] [--batch 32] [--compute-dtype D]
      Cost per image of the 30,000-dim sparse projection (ViTs: their 12 blocks; other models: every candidate
      layer) as a share of the forward, for each kernel the backend has (CPU: "host", "gather", "generate";
      accelerators: "gather", "generate"), and on CPU
      scikit-learn's ``SparseRandomProjection.transform`` of the same ViT layers.

  python benchmarks/extract.py --memory [--n 10000] [--batch 32]
      Peak host memory (max RSS) of a child process that extracts the 12 ViT-S/16 blocks over ``n``
      synthetic stimuli with the 30,000-dim projection into an out_dir in float16.

  python benchmarks/extract.py --device-report [--batch 256] [--iters 20]
      On an accelerator: images/s and MFU in bfloat16 (achieved FLOP/s, from XLA's cost analysis of the
      lowered HLO, over the card's dense bf16 peak; H100/H200 SXM: 989 TFLOP/s, or ``--peak-tflops``) for the
      logits forward and the extraction forward (all candidate layers pooled; ViT-S also its 12 blocks
      projected, with stored and with generated indices).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

TIMM_NAMES = {"vit_s16": "vit_small_patch16_224", "resnet50": "resnet50", "convnext_s": "convnext_small"}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}
PARITY_PYTHON = "/work/venv-parity/bin/python"


# ---------------------------------------------------------------------------------------------------------
# PyTorch side (runs in its own process)
# ---------------------------------------------------------------------------------------------------------
def torch_worker(model: str, batch: int, iters: int, threads: int) -> dict:
    import timm
    import torch

    torch.set_num_threads(threads)
    net = timm.create_model(TIMM_NAMES[model], pretrained=False).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        net(x)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return {"model": model, "images_per_s": batch / min(times), "median_s": sorted(times)[len(times) // 2],
            "torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads()}


def run_torch(model: str, batch: int, iters: int, threads: int, python: str) -> dict:
    cmd = [python, __file__, "--torch-worker", model, "--batch", str(batch), "--iters", str(iters),
           "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def torch_python(requested: str | None) -> str | None:
    if requested:
        return requested
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
        return sys.executable
    except ImportError:
        return PARITY_PYTHON if os.path.exists(PARITY_PYTHON) else None


# ---------------------------------------------------------------------------------------------------------
# JAX side
# ---------------------------------------------------------------------------------------------------------
class SyntheticStimuli:
    """``n`` random 256 x 256 RGB images generated from their id (no storage), per the StimulusSet contract."""

    def __init__(self, n: int, size: int = 256):
        self.n, self.size = n, size

    @property
    def ids(self):
        return [f"img{k:06d}" for k in range(self.n)]

    def __len__(self):
        return self.n

    def __contains__(self, i):
        return i.startswith("img") and 0 <= int(i[3:]) < self.n

    def load(self, i):
        import numpy as np
        rng = np.random.default_rng(int(i[3:]))
        small = rng.integers(0, 256, (self.size // 8, self.size // 8, 3), dtype=np.uint8)
        return np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)  # blocky, so JPEG-like smooth regions


def _build(name: str):
    from flax import nnx

    from jaxbrain.models import registry
    spec = registry.get(name)
    return spec, spec.build(nnx.Rngs(0))


def _time(fn, iters: int) -> float:
    import jax
    jax.block_until_ready(fn())
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def _flops(lowered) -> float:
    """FLOPs of the lowered (unoptimised) HLO: backend-independent, whereas a GPU executable's own analysis
    leaves out library calls (cuBLAS/cuDNN)."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def jax_rates(name: str, batch: int, iters: int, compute_dtype: str | None = None,
              projection_kernels: tuple = ()) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jaxbrain import features, sharding
    from jaxbrain.features.forward import cast_floating
    spec, model = _build(name)
    mesh = sharding.data_mesh()
    graphdef, state = nnx.split(model)
    state = cast_floating(state, compute_dtype)
    dtype = jnp.dtype(compute_dtype or "float32")
    images_np = np.random.default_rng(0).normal(size=(batch, 224, 224, 3)).astype(np.float32)
    images = sharding.global_batch(images_np, mesh)

    @jax.jit
    def logits(state, images):
        return nnx.merge(graphdef, state)(images.astype(dtype), train=False)[0]

    lowered = logits.lower(state, images)
    compiled = lowered.compile()
    logits_s = _time(lambda: compiled(state, images), iters)
    result = {"model": name, "batch": batch, "logits_images_per_s": batch / logits_s,
              "logits_flops_per_image": _flops(lowered) / batch}
    forward = features.make_forward(model, spec, spec.layers, "pooled", mesh=mesh, compute_dtype=compute_dtype)
    result["pooled_images_per_s"] = batch / _time(lambda: forward(images), iters)
    if projection_kernels:  # the projected layers pooled, then projected by each kernel: cost = the difference
        layers = projected_layers(spec)
        result["projected_layers"] = len(layers)
        result["in_dim"] = features.plan_layers(model, spec, layers[-1:], "projection", 30000)[layers[-1]].flat_dim
        forward = features.make_forward(model, spec, layers, "pooled", mesh=mesh, compute_dtype=compute_dtype)
        result["projected_layers_pooled_images_per_s"] = batch / _time(lambda: forward(images), iters)
        for kernel in projection_kernels:
            forward = features.make_forward(model, spec, layers, "projection", mesh=mesh, compute_dtype=compute_dtype,
                                            dtype="float16", projection_kernel=kernel)
            result[f"projected_{kernel}_images_per_s"] = batch / _time(lambda: forward(images), iters)
    return result


def projection_share(rates: dict, kernel: str) -> tuple[float, float]:
    """Seconds per image the projection adds with ``kernel``, and that as a share of the logits forward."""
    cost = 1 / rates[f"projected_{kernel}_images_per_s"] - 1 / rates["projected_layers_pooled_images_per_s"]
    return cost, cost * rates["logits_images_per_s"]


def projected_layers(spec) -> list[str]:
    """ViTs: their 12 blocks (the issue's case); other models: every candidate layer that is projected."""
    blocks = [layer for layer in spec.layers if layer.startswith("blocks.")]
    return blocks or list(spec.layers)


def sklearn_projection_s(in_dim: int, batch: int, iters: int) -> float:
    """Seconds per image of scikit-learn's ``SparseRandomProjection.transform`` (30,000 components, density
    auto, dense output) on float32 features of ``in_dim``: what a user would otherwise run per layer."""
    import numpy as np
    from sklearn.random_projection import SparseRandomProjection
    x = np.random.default_rng(0).normal(size=(batch, in_dim)).astype(np.float32)
    srp = SparseRandomProjection(30000, dense_output=True, random_state=0).fit(x[:1])
    return _time(lambda: srp.transform(x), iters) / batch


def extract_rates(name: str, batch: int, n: int, threads: int) -> dict:
    """End-to-end ``features.extract`` images/s (all candidate layers pooled) decoding every image, and reading
    them from a warm stimulus cache (``data.stimulus_cache``); and the seconds the cache took to build."""
    from jaxbrain import features
    from jaxbrain.data.stimulus_cache import cached_stimuli
    spec, model = _build(name)
    stim = SyntheticStimuli(n)

    def rate(stimuli) -> float:
        t0 = time.perf_counter()
        features.extract(model, spec, stimuli, stim.ids, spec.layers, keep="pooled", batch_size=batch,
                         progress=False, num_threads=threads)
        return n / (time.perf_counter() - t0)

    features.extract(model, spec, stim, stim.ids[:batch], spec.layers, keep="pooled", batch_size=batch,
                     progress=False, num_threads=threads)  # compile
    with tempfile.TemporaryDirectory(prefix="jaxbrain_stimuli_") as cache_dir:
        t0 = time.perf_counter()
        cached = cached_stimuli(stim, stim.ids, spec.preprocessing, cache_dir, "synthetic", num_threads=threads)
        build_s = time.perf_counter() - t0
        return {"decoded": rate(stim), "cached": rate(cached), "cache_build_s": build_s}


def _end_to_end_line(name: str, n: int, rates: dict, forward_rate: float) -> str:
    return (f"{name:11s} features.extract end to end, {n} images: decoding {rates['decoded']:.1f} img/s, "
            f"warm stimulus cache {rates['cached']:.1f} img/s ({rates['cached'] / forward_rate:.2f} of the "
            f"forward-only {forward_rate:.1f}; cache built in {rates['cache_build_s']:.1f} s)")


def memory_worker(n: int, batch: int, out_dir: str) -> dict:
    from jaxbrain import features
    spec, model = _build("vit_s16")
    blocks = [layer for layer in spec.layers if layer.startswith("blocks.")]
    stim = SyntheticStimuli(n)
    import jax
    jax.block_until_ready(jax.numpy.zeros(1) + 1)  # start the runtime: its memory is the baseline
    baseline_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    t0 = time.perf_counter()
    result = features.extract(model, spec, stim, stim.ids, blocks, keep="projection", batch_size=batch,
                              out_dir=out_dir, dtype="float16", progress=True)
    seconds = time.perf_counter() - t0
    shapes = {k: list(v.shape) for k, v in list(result.items())[:1]}
    return {"n": n, "layers": len(blocks), "seconds": seconds, "images_per_s": n / seconds, "shape": shapes,
            "baseline_gb": baseline_gb, "backend": jax.default_backend()}


# ---------------------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def cpu_comparison(args) -> None:
    threads = args.threads or os.cpu_count()
    python = torch_python(args.torch_python)
    print(f"CPU comparison on {cpu_model()}, batch {args.batch}, 224 px, {threads} threads "
          f"(os.cpu_count() = {os.cpu_count()})")
    for name in args.models.split(","):
        jx = jax_rates(name, args.batch, args.iters)
        line = (f"{name:11s} jaxbrain logits {jx['logits_images_per_s']:7.1f} img/s, "
                f"all {len(_build(name)[0].layers)} candidate layers pooled {jx['pooled_images_per_s']:7.1f} img/s")
        if python is not None:
            pt = run_torch(name, args.batch, args.iters, threads, python)
            line += (f" | timm {pt['images_per_s']:7.1f} img/s (torch {pt['torch']}, timm {pt['timm']}, "
                     f"{pt['threads']} threads) | ratio logits {jx['logits_images_per_s'] / pt['images_per_s']:.2f}"
                     f", pooled layers {jx['pooled_images_per_s'] / pt['images_per_s']:.2f}")
        else:
            line += " | timm: no torch+timm interpreter found (--torch-python)"
        print(line, flush=True)
        if args.end_to_end:
            rates = extract_rates(name, args.batch, args.end_to_end, threads)
            print(_end_to_end_line(name, args.end_to_end, rates, jx["pooled_images_per_s"]), flush=True)


def projection_report(args) -> None:
    import jax
    kernels = ("host", "gather", "generate") if jax.default_backend() == "cpu" else ("gather", "generate")
    device = jax.devices()[0].device_kind
    device = cpu_model() if jax.default_backend() == "cpu" else device
    print(f"Projection to 30,000 dims on {device} ({jax.default_backend()}), batch {args.batch}, 224 px, "
          f"{args.compute_dtype or 'float32'} compute; cost = projected forward - pooled forward, per image")
    for name in args.models.split(","):
        r = jax_rates(name, args.batch, args.iters, args.compute_dtype, projection_kernels=kernels)
        line = (f"{name:11s} {r['projected_layers']} layers | forward (logits) "
                f"{1e3 / r['logits_images_per_s']:.2f} ms/img, pooled "
                f"{1e3 / r['projected_layers_pooled_images_per_s']:.2f}")
        for kernel in kernels:
            cost, share = projection_share(r, kernel)
            line += (f" | {kernel}: projected {1e3 / r[f'projected_{kernel}_images_per_s']:.2f} ms/img, "
                     f"projection {1e3 * cost:.2f} ms/img = {100 * share:.0f} % of the forward")
        print(line, flush=True)
        if name.startswith("vit") and "host" in kernels:  # its blocks share one input size
            sk = sklearn_projection_s(r["in_dim"], args.batch, args.iters) * r["projected_layers"]
            host = projection_share(r, "host")[0]
            print(f"{'':11s} scikit-learn SparseRandomProjection.transform of the same {r['projected_layers']} "
                  f"layers: {1e3 * sk:.2f} ms/img; the host kernel is {sk / host:.1f}x faster", flush=True)


def memory_report(args) -> None:
    out_dir = tempfile.mkdtemp(prefix="jaxbrain_extract_")
    try:
        cmd = [sys.executable, __file__, "--memory-worker", "--n", str(args.n), "--batch", str(args.batch),
               "--out-dir", out_dir]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
        disk_gb = sum(f.stat().st_size for f in pathlib.Path(out_dir).iterdir()) / 1e9
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    note = "" if args.n == 10000 else f" (run with --n {args.n}, not the 10,000 of the target)"
    print(f"ViT-S/16, {info['layers']} blocks -> 30,000-dim projection, {args.n} stimuli, batch {args.batch}, "
          f"float16 out_dir{note}, {info['backend']}: peak host memory {peak_gb:.2f} GB (max RSS; "
          f"{info['baseline_gb']:.2f} GB before extracting: runtime and model), {info['images_per_s']:.1f} img/s, "
          f"{info['seconds']:.0f} s, {disk_gb:.2f} GB written")


def device_report(args) -> None:
    import jax
    device = jax.devices()[0]
    kind = device.device_kind
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)
    print(f"device: {kind} x{jax.device_count()} ({jax.default_backend()}), jax {jax.__version__}, bf16, "
          f"batch {args.batch}, peak {peak} TFLOP/s")
    pooled = {}
    for name in args.models.split(","):
        kernels = ("gather", "generate") if name.startswith("vit") else ()
        r = jax_rates(name, args.batch, args.iters, compute_dtype="bfloat16", projection_kernels=kernels)
        pooled[name] = r["pooled_images_per_s"]
        achieved = r["logits_images_per_s"] * r["logits_flops_per_image"]
        mfu = f"{100 * achieved / (peak * 1e12):.1f} %" if peak else "n/a (unknown peak)"
        line = (f"{name:11s} logits {r['logits_images_per_s']:9.0f} img/s, "
                f"{r['logits_flops_per_image'] / 1e9:.2f} GFLOP/img, MFU {mfu}; all layers pooled "
                f"{r['pooled_images_per_s']:9.0f} img/s")
        for kernel in kernels:
            line += (f"; 12 blocks projected to 30,000 ({kernel}) {r[f'projected_{kernel}_images_per_s']:8.0f} "
                     f"img/s (projection {100 * projection_share(r, kernel)[1]:.0f} % of the forward)")
        print(line, flush=True)
    if args.end_to_end:
        for name in args.models.split(","):
            rates = extract_rates(name, args.batch, args.end_to_end, args.threads or os.cpu_count())
            print(_end_to_end_line(name, args.end_to_end, rates, pooled[name]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_s16,resnet50,convnext_s")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--end-to-end", type=int, default=0, help="also time features.extract on this many images")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--device-report", action="store_true")
    parser.add_argument("--projection", action="store_true", help="projection cost against the forward")
    parser.add_argument("--compute-dtype", default=None)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch is None:
        args.batch = 256 if args.device_report else 32
    if args.torch_worker:
        print(json.dumps(torch_worker(args.torch_worker, args.batch, args.iters, args.threads or os.cpu_count())))
    elif args.memory_worker:
        print(json.dumps(memory_worker(args.n, args.batch, args.out_dir)))
    elif args.memory:
        memory_report(args)
    elif args.projection:
        projection_report(args)
    elif args.device_report:
        device_report(args)
    else:
        cpu_comparison(args)


if __name__ == "__main__":
    main()
