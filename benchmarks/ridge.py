"""Ridge with leave-one-out alpha selection: jaxbrain vs scikit-learn vs himalaya on the same inputs.

    python benchmarks/ridge.py            # both cases at full size (minutes on a 2-core CPU)
    python benchmarks/ridge.py --quick    # small shapes, seconds
    python benchmarks/ridge.py --case 1 --skip himalaya

Case 1: one fit + prediction, per-target alpha (n_train 4000, n_test 500, d 5000, t 2000, 17 alphas, float32),
through jaxbrain RidgeCV, sklearn RidgeCV (cv=None: exact LOO, computed in float64) and himalaya KernelRidgeCV
(linear kernel, numpy backend, its default 5-fold CV since it has no exact LOO), plus jaxbrain in float64 to check
that it picks exactly scikit-learn's alphas. The FLOP floor is the matrix-multiply FLOPs of the dual LOO solution
(K = X X^T, Q^T Y, one Q (w Q^T Y) per alpha, X^T C, X_test coef) at the float32 matmul rate measured in this run
(the faster of numpy/OpenBLAS and XLA) plus the measured time of one float32 eigh of K.

Case 2: a layer sweep with one alpha shared per ROI: for each of 8 layers, 5 contiguous outer folds (alpha by
LOO inside each) plus the final fit on the whole train split scored on the test split. Reference: scikit-learn's
cross_validate over RidgeCV on the same features, then RidgeCV refit (what the reference code does); jaxbrain:
one fit_predict_splits call per layer (one kernel per layer serves all 6 fits).

GPU mode (``--gpu``; runs on whatever JAX backend is present, so also on CPU):

    python -m benchmarks.ridge --gpu                      # the 1/8 case, then the NSD-sized case
    python -m benchmarks.ridge --gpu --size tiny          # small shapes (under a minute on a 2-core CPU)
    python -m benchmarks.ridge --gpu --size nsd --chunk 8192 --peak-tflops 67

One fit with a per-target alpha chosen by exact LOO residuals and a prediction of the test split: NSD-sized
(n_train 8,000, n_test 1,000, d 30,000, 100,000 targets, 10 alphas) and 1/8 of each size. jaxbrain
(``fit_predict_splits`` with one split) against a PyTorch port of scikit-learn's ``_RidgeGCV`` eigen-Gram path
written below (centred Gram + ones ones^T, eigh, the intercept eigenvector unpenalised, per alpha
c = Q diag(w) Q^T y, diag(G^-1) = (Q * Q) w, LOO residual c / diag, best alpha per target). Both float32 with
full-precision matmuls pinned (JAX ``default_matmul_precision('highest')``; torch TF32 off) and both stream
targets from host memory in chunks of ``--chunk`` targets, so 100,000 targets fit in device memory. Printed per
method: time of the first call (compilation included) and of a second call, achieved TFLOP/s (nominal FLOPs of
the algorithm over the second call) and the fraction of ``--peak-tflops`` (default 67, H100 SXM float32), peak
device memory, agreement of the chosen alphas and of the test r, and the jaxbrain / torch time ratio. Each method
runs in its own process, which regenerates the same inputs from the seed.

Every CPU-mode method runs in its own subprocess; peak memory is that process's ru_maxrss minus its resident size once
the inputs are loaded, so it counts numpy's and XLA's native allocations.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CASES = {
    1: dict(full=dict(n_train=4000, n_test=500, d=5000, t=2000, n_alphas=17),
            quick=dict(n_train=600, n_test=100, d=800, t=300, n_alphas=17)),
    2: dict(full=dict(n_train=1000, n_test=200, d=16384, t=100, layers=8, folds=5, n_alphas=10),
            quick=dict(n_train=300, n_test=60, d=2000, t=40, layers=3, folds=5, n_alphas=10)),
}


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def _spectrum_features(rng, n, d, decay=0.5):
    """Gaussian features with a power-law spectrum, like network activations."""
    scales = (1.0 + np.arange(d)) ** (-decay)
    return (rng.standard_normal((n, d), dtype=np.float32) * scales.astype(np.float32)) + 0.3


def make_case1(shape, seed=0):
    rng = np.random.default_rng(seed)
    n = shape["n_train"] + shape["n_test"]
    X = _spectrum_features(rng, n, shape["d"])
    W = rng.standard_normal((shape["d"], shape["t"]), dtype=np.float32) / np.sqrt(shape["d"])
    signal = X @ W
    noise_sd = np.geomspace(0.02, 2.0, shape["t"]).astype(np.float32) * signal.std()
    Y = signal + rng.standard_normal(signal.shape, dtype=np.float32) * noise_sd + 1.0
    alphas = np.logspace(-1, 5, shape["n_alphas"])
    return dict(X=X, Y=Y.astype(np.float32), alphas=alphas, n_train=np.array(shape["n_train"]))


def case2_layer(shape, layer, seed=0):
    rng = np.random.default_rng([seed, layer])
    return _spectrum_features(rng, shape["n_train"] + shape["n_test"], shape["d"], decay=0.3 + 0.05 * layer)


def make_case2(shape, seed=0):
    rng = np.random.default_rng([seed, 99])
    true_layer = shape["layers"] // 2
    X = case2_layer(shape, true_layer, seed)
    W = rng.standard_normal((shape["d"], shape["t"]), dtype=np.float32) / np.sqrt(shape["d"])
    signal = X @ W
    Y = signal + rng.standard_normal(signal.shape, dtype=np.float32) * signal.std() + 1.0
    return dict(Y=Y.astype(np.float32), alphas=np.logspace(-1, 5, shape["n_alphas"]))


def pearson_np(y, p):
    y = y - y.mean(0)
    p = p - p.mean(0)
    return (y * p).sum(0) / np.sqrt((y * y).sum(0) * (p * p).sum(0))


# ----------------------------------------------------------------------------------------------------------------
# Workers (one per subprocess)
# ----------------------------------------------------------------------------------------------------------------


def _rss_bytes():
    import psutil

    return psutil.Process().memory_info().rss


def _peak_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_case1(method, inputs):
    X, Y, alphas, n = inputs["X"], inputs["Y"], inputs["alphas"], int(inputs["n_train"])
    Xtr, Xte, Ytr = X[:n], X[n:], Y[:n]
    if method == "jaxbrain64":
        Xtr, Xte, Ytr = Xtr.astype(np.float64), Xte.astype(np.float64), Ytr.astype(np.float64)
    if method.startswith("jaxbrain"):
        import jax

        jax.config.update("jax_enable_x64", method == "jaxbrain64")
        from jaxbrain.ridge import RidgeCV

        jax.block_until_ready(jax.numpy.zeros(1))
    elif method == "sklearn":
        from sklearn.linear_model import RidgeCV
    elif method == "himalaya":
        from himalaya.backend import set_backend
        from himalaya.kernel_ridge import KernelRidgeCV

        set_backend("numpy")
    def once():
        if method == "himalaya":
            est = KernelRidgeCV(alphas=alphas, kernel="linear", fit_intercept=True, cv=5)
            est.fit(Xtr, Ytr)
            return np.asarray(est.predict(Xte)), np.asarray(est.best_alphas_)
        est = RidgeCV(alphas=alphas, alpha_per_target=True, fit_intercept=True).fit(Xtr, Ytr)
        return np.asarray(est.predict(Xte)), np.asarray(est.alpha_)

    base = _rss_bytes()
    start = time.perf_counter()
    pred, chosen = once()
    wall = time.perf_counter() - start
    warm = np.nan
    if method.startswith("jaxbrain"):  # again, with every function already compiled
        start = time.perf_counter()
        once()
        warm = time.perf_counter() - start
    return dict(wall=wall, warm=warm, peak=_peak_bytes() - base), dict(pred=pred, alpha=chosen)


def _splits(n_train, n_test, folds):
    from sklearn.model_selection import KFold

    train = np.arange(n_train)
    out = [(train[a], train[b]) for a, b in KFold(folds).split(train)]
    out.append((train, np.arange(n_train, n_train + n_test)))
    return out


def worker_case2(method, inputs, shape):
    Y, alphas = inputs["Y"], inputs["alphas"]
    layers = [case2_layer(shape, layer) for layer in range(shape["layers"])]
    splits = _splits(shape["n_train"], shape["n_test"], shape["folds"])
    if method == "jaxbrain":
        import jax

        import jaxbrain.ridge  # noqa: F401  (import time is not fit time)

        jax.block_until_ready(jax.numpy.zeros(1))
    else:
        import sklearn.linear_model  # noqa: F401
    def sweep():
        return _sweep(method, layers, Y, alphas, splits, shape)

    base = _rss_bytes()
    start = time.perf_counter()
    arrays = sweep()
    wall = time.perf_counter() - start
    warm = np.nan
    if method == "jaxbrain":  # again, with every function already compiled
        start = time.perf_counter()
        sweep()
        warm = time.perf_counter() - start
    return dict(wall=wall, warm=warm, peak=_peak_bytes() - base), arrays


def _sweep(method, layers, Y, alphas, splits, shape):
    if method == "jaxbrain":
        from jaxbrain.ridge import fit_predict_splits
    else:
        from sklearn.linear_model import RidgeCV
        from sklearn.model_selection import KFold, cross_validate
    cv_r = np.zeros((len(layers), shape["folds"]))
    fold_alpha = np.zeros((len(layers), shape["folds"] + 1))
    test_r = np.zeros((len(layers), Y.shape[1]))
    n = shape["n_train"]
    for li, X in enumerate(layers):
        if method == "jaxbrain":
            fits = fit_predict_splits(X, Y, splits, alphas, gram=False)
            for k, ((_, te), fit) in enumerate(zip(splits, fits)):
                r = pearson_np(Y[te], fit.predictions)
                fold_alpha[li, k] = fit.alpha
                if k < shape["folds"]:
                    cv_r[li, k] = r.mean()
                else:
                    test_r[li] = r
        else:
            def mean_r(estimator, X_, y_):
                return pearson_np(y_, estimator.predict(X_)).mean()

            res = cross_validate(RidgeCV(alphas=alphas), X[:n], Y[:n], cv=KFold(shape["folds"]), scoring=mean_r,
                                 return_estimator=True)
            cv_r[li] = res["test_score"]
            fold_alpha[li, :-1] = [e.alpha_ for e in res["estimator"]]
            final = RidgeCV(alphas=alphas).fit(X[:n], Y[:n])
            fold_alpha[li, -1] = final.alpha_
            test_r[li] = pearson_np(Y[n:], final.predict(X[n:]))
    return dict(cv_r=cv_r, alpha=fold_alpha, test_r=test_r)


def floor_probe(shape):
    """Float32 matmul rate (best of numpy and XLA) and one float32 eigh of an n_train x n_train kernel."""
    import jax
    import jax.numpy as jnp

    n, d, t = shape["n_train"], shape["d"], shape["t"]
    rng = np.random.default_rng(1)
    A = rng.standard_normal((n, n), dtype=np.float32)
    B = rng.standard_normal((n, t), dtype=np.float32)
    flops = 2.0 * n * n * t
    rates = {}
    mm = jax.jit(jnp.matmul)
    Aj, Bj = jnp.asarray(A), jnp.asarray(B)
    jax.block_until_ready(mm(Aj, Bj))
    for name, fn in (("numpy", lambda: A @ B), ("xla", lambda: jax.block_until_ready(mm(Aj, Bj)))):
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        rates[name] = flops / best
    X = _spectrum_features(rng, n, d)
    K = X @ X.T
    eig = {}
    t0 = time.perf_counter()
    np.linalg.eigh(K)
    eig["numpy"] = time.perf_counter() - t0
    fn = jax.jit(lambda k: jax.lax.linalg.eigh(k, symmetrize_input=False))
    Kj = jnp.asarray(K)
    jax.block_until_ready(fn(Kj + 0))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(Kj))
    eig["xla"] = time.perf_counter() - t0
    return dict(rates=rates, eigh=eig), {}


def case1_flops(shape):
    n, nt, d, t, a = shape["n_train"], shape["n_test"], shape["d"], shape["t"], shape["n_alphas"]
    return 2.0 * (n * n * d + n * n * t + a * n * n * t + n * d * t + nt * d * t)


# ----------------------------------------------------------------------------------------------------------------
# GPU mode: per-target LOO at NSD size, jaxbrain against a PyTorch port of scikit-learn's _RidgeGCV
# ----------------------------------------------------------------------------------------------------------------

GPU_SIZES = {
    "nsd": dict(n_train=8000, n_test=1000, d=30000, t=100000, n_alphas=10),
    "eighth": dict(n_train=1000, n_test=125, d=3750, t=12500, n_alphas=10),
    "tiny": dict(n_train=256, n_test=64, d=1024, t=2048, n_alphas=10),
}
SIGNAL_RANK = 32


def make_gpu_inputs(shape, seed=0):
    """Features with a power-law spectrum; targets = a rank-32 signal of the features + noise of varied size."""
    rng = np.random.default_rng([seed, 7])
    n = shape["n_train"] + shape["n_test"]
    X = _spectrum_features(rng, n, shape["d"])
    W = rng.standard_normal((SIGNAL_RANK, shape["t"]), dtype=np.float32)
    Y = np.empty((n, shape["t"]), np.float32)
    noise_sd = np.geomspace(0.1, 10.0, shape["t"]).astype(np.float32)
    for start in range(0, shape["t"], 8192):  # column blocks bound the temporaries
        cols = slice(start, min(start + 8192, shape["t"]))
        Y[:, cols] = X[:, :SIGNAL_RANK] @ W[:, cols] + rng.standard_normal((n, cols.stop - cols.start),
                                                                           dtype=np.float32) * noise_sd[cols]
    return X, Y, np.logspace(-1, 5, shape["n_alphas"])


def gpu_flops(shape):
    """Nominal FLOPs of the LOO path: train and cross kernels, eigh (9 n^3), Q^T Y, one Q (w R) per alpha,
    the test prediction."""
    n, nt, d, t, a = shape["n_train"], shape["n_test"], shape["d"], shape["t"], shape["n_alphas"]
    return 2.0 * n * n * d + 2.0 * nt * n * d + 9.0 * n**3 + 2.0 * n * n * t * (1 + a) + 2.0 * nt * n * t


def _gpu_jaxbrain(X, Y, alphas, n, chunk):
    import jax

    from jaxbrain.ridge import fit_predict_splits

    splits = [(np.arange(n), np.arange(n, X.shape[0]))]
    with jax.default_matmul_precision("highest"):
        fit = fit_predict_splits(X, Y, splits, alphas, gram=False, alpha_per_target=True, target_chunk=chunk)[0]
    return fit.predictions, np.searchsorted(alphas, fit.alpha)


def _torch_gcv_setup(X, n, torch, device):
    """Centred train Gram + ones ones^T (as _RidgeGCV._eigen_decompose_gram), its eigh, the intercept eigenvector,
    and the centred (test, train) kernel."""
    Xt = torch.from_numpy(X).to(device)
    mean = Xt[:n].mean(0)
    X_train, X_test = Xt[:n] - mean, Xt[n:] - mean
    K = X_train @ X_train.T + 1.0
    K_test = X_test @ X_train.T
    del Xt, X_train, X_test
    eigvals, Q = torch.linalg.eigh(K)
    del K
    intercept_dim = int(torch.argmax(torch.abs(Q.sum(0))))  # _find_smallest_angle with unit sample weights
    return eigvals, Q, K_test, intercept_dim


def _gpu_torch(X, Y, alphas, n, chunk):
    """scikit-learn's _RidgeGCV eigen path (alpha_per_target=True, unit weights, intercept) in PyTorch, with
    targets streamed in chunks."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    eigvals, Q, K_test, intercept_dim = _torch_gcv_setup(X, n, torch, device)
    Q_sq = Q * Q
    preds = np.empty((X.shape[0] - n, Y.shape[1]), np.float32)
    chosen = np.empty(Y.shape[1], np.int64)
    for start in range(0, Y.shape[1], chunk):
        cols = slice(start, min(start + chunk, Y.shape[1]))
        y = torch.from_numpy(np.ascontiguousarray(Y[:n, cols])).to(device)
        y_mean = y.mean(0)
        QT_y = Q.T @ (y - y_mean)
        best_err = torch.full((y.shape[1],), torch.inf, device=device)
        best_idx = torch.zeros(y.shape[1], dtype=torch.int64, device=device)
        best_c = torch.zeros_like(y)
        for i, alpha in enumerate(alphas):
            w = 1.0 / (eigvals + float(alpha))
            w[intercept_dim] = 0.0  # cancel the penalty on the intercept
            c = Q @ (w[:, None] * QT_y)
            err = ((c / (Q_sq @ w)[:, None]) ** 2).mean(0)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_idx = torch.where(better, i, best_idx)
            best_c = torch.where(better[None, :], c, best_c)
        preds[:, cols] = (K_test @ best_c + y_mean).cpu().numpy()
        chosen[cols] = best_idx.cpu().numpy()
    return preds, chosen


def _device_peak_mib(method):
    if method == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", float("nan")) / 2**20


def _pin_full_precision(method):
    if method == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        return f"torch {torch.__version__} on {name}"
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    return f"jax {jax.__version__} on {jax.devices()[0].device_kind}"


def worker_gpu(method, size, chunk, repeats):
    shape = GPU_SIZES[size]
    X, Y, alphas = make_gpu_inputs(shape)
    n = shape["n_train"]
    device = _pin_full_precision(method)
    run = _gpu_torch if method == "torch" else _gpu_jaxbrain
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        preds, chosen = run(X, Y, alphas, n, chunk)
        times.append(time.perf_counter() - start)
    r = pearson_np(Y[n:], preds)
    stats = dict(times=times, peak_mib=_device_peak_mib(method), device=device)
    return stats, dict(alpha_idx=chosen, r=r)


def _env_with_repo():
    """The environment of a worker process, importing jaxbrain from this checkout."""
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def spawn_gpu(method, size, chunk, repeats, workdir):
    out = os.path.join(workdir, f"gpu_{size}_{method}.npz")
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env = _env_with_repo()
    cmd = [sys.executable, "-m", "benchmarks.ridge", "--worker", f"gpu_{method}", "--size", size, "--chunk",
           str(chunk), "--repeats", str(repeats), "--output", out]
    subprocess.run(cmd, check=True, env=env, cwd=root)
    return json.loads(pathlib.Path(out + ".json").read_text()), dict(np.load(out))


def run_gpu(size, chunk, repeats, peak_tflops, skip, workdir):
    shape = GPU_SIZES[size]
    flops = gpu_flops(shape)
    results = {m: spawn_gpu(m, size, chunk, repeats, workdir) for m in ("jaxbrain", "torch") if m not in skip}
    print(f"\nGPU mode, size {size}: {shape}, per-target alpha by LOO, float32, full-precision matmuls, "
          f"targets in chunks of {chunk}; nominal {flops / 1e9:,.1f} GFLOP; peak {peak_tflops:g} TFLOP/s")
    print("| method | device | first call s | second call s | TFLOP/s | of peak | peak device MiB | "
          "alphas != torch | max abs test-r diff |")
    print("|" + "---|" * 9)
    ref = results.get("torch")
    for m, (stats, arrays) in results.items():
        best = min(stats["times"][1:] or stats["times"])
        rate = flops / best / 1e12
        if ref is not None:
            ndiff = int(np.sum(arrays["alpha_idx"] != ref[1]["alpha_idx"]))
            rdiff = float(np.max(np.abs(arrays["r"] - ref[1]["r"])))
        else:
            ndiff, rdiff = -1, np.nan
        peak_mib = "n/a" if np.isnan(stats["peak_mib"]) else f"{stats['peak_mib']:,.0f}"
        print(f"| {m} | {stats['device']} | {stats['times'][0]:.2f} | {best:.2f} | {rate:.3f} | "
              f"{rate / peak_tflops:.2%} | {peak_mib} | {ndiff} / {shape['t']} | {rdiff:.1e} |")
    if len(results) == 2:
        ratio = min(results["jaxbrain"][0]["times"][1:] or results["jaxbrain"][0]["times"]) / min(
            ref[0]["times"][1:] or ref[0]["times"])
        print(f"time ratio jaxbrain / torch (second call): {ratio:.2f}")


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------


def run_worker(args):
    if args.worker.startswith("gpu_"):
        stats, arrays = worker_gpu(args.worker[4:], args.size[0], args.chunk, args.repeats)
        np.savez(args.output, **arrays)
        pathlib.Path(args.output + ".json").write_text(json.dumps(stats))
        return
    inputs = dict(np.load(args.input))
    shape = CASES[args.case]["quick" if args.quick else "full"]
    if args.worker == "floor":
        stats, arrays = floor_probe(shape)
    elif args.case == 1:
        stats, arrays = worker_case1(args.worker, inputs)
    else:
        stats, arrays = worker_case2(args.worker, inputs, shape)
    np.savez(args.output, **arrays)
    pathlib.Path(args.output + ".json").write_text(json.dumps(stats))


def spawn(method, case, quick, input_path, workdir):
    out = os.path.join(workdir, f"case{case}_{method}.npz")
    cmd = [sys.executable, __file__, "--worker", method, "--case", str(case), "--input", input_path, "--output", out]
    if quick:
        cmd.append("--quick")
    env = _env_with_repo()
    if method == "jaxbrain_hostblas":  # large float32 products through numpy's BLAS (see jaxbrain.ridge._core._dot)
        env["JAXBRAIN_HOST_BLAS"] = "1"
    subprocess.run(cmd, check=True, env=env)
    stats = json.loads(pathlib.Path(out + ".json").read_text())
    return stats, dict(np.load(out))


def _fmt_mib(b):
    return f"{b / 2**20:,.0f}"


def _alpha_diff(a, ref):
    a, ref = np.asarray(a, float), np.asarray(ref, float)
    return int(np.sum(a != ref)), float(np.max(np.abs(np.log10(a) - np.log10(ref))))


def run_case1(quick, skip, workdir):
    shape = CASES[1]["quick" if quick else "full"]
    path = os.path.join(workdir, "case1.npz")
    inputs = make_case1(shape)
    np.savez(path, **inputs)
    n = shape["n_train"]
    Yte = inputs["Y"][n:]
    floor_stats, _ = spawn("floor", 1, quick, path, workdir)
    rate = max(floor_stats["rates"].values())
    eigh_time = min(floor_stats["eigh"].values())
    floor = case1_flops(shape) / rate + eigh_time
    methods = [m for m in ("jaxbrain", "jaxbrain_hostblas", "sklearn", "himalaya", "jaxbrain64") if m not in skip]
    results = {m: spawn(m, 1, quick, path, workdir) for m in methods}
    print(f"\nCase 1: {shape}, per-target alpha, float32 inputs")
    print(f"float32 matmul rate: numpy {floor_stats['rates']['numpy'] / 1e9:.0f} GFLOP/s, "
          f"XLA {floor_stats['rates']['xla'] / 1e9:.0f} GFLOP/s; eigh({n}) numpy {floor_stats['eigh']['numpy']:.2f} s, "
          f"XLA {floor_stats['eigh']['xla']:.2f} s")
    print(f"FLOP floor: {case1_flops(shape) / 1e9:.0f} GFLOP at {rate / 1e9:.0f} GFLOP/s + eigh {eigh_time:.2f} s "
          f"= {floor:.2f} s")
    ref = results.get("sklearn")
    header = ("| method | wall s | warm s | x floor (wall) | sklearn / method | peak MiB | alphas != sklearn | "
              "max abs log10 alpha diff | max abs test-r diff |")
    print(header)
    print("|" + "---|" * 9)
    rows = []
    for m, (stats, arrays) in results.items():
        r = pearson_np(Yte, arrays["pred"])
        if ref is not None:
            ndiff, logdiff = _alpha_diff(arrays["alpha"], ref[1]["alpha"])
            rdiff = float(np.max(np.abs(r - pearson_np(Yte, ref[1]["pred"]))))
            speed = ref[0]["wall"] / stats["wall"]
        else:
            ndiff, logdiff, rdiff, speed = -1, np.nan, np.nan, np.nan
        row = (f"| {m} | {stats['wall']:.1f} | {stats['warm']:.1f} | {stats['wall'] / floor:.2f} | {speed:.1f} | "
               f"{_fmt_mib(stats['peak'])} | "
               f"{ndiff} / {len(np.atleast_1d(arrays['alpha']))} | {logdiff:.2g} | {rdiff:.1e} |")
        rows.append(row)
        print(row)
    return rows, floor


def run_case2(quick, skip, workdir):
    shape = CASES[2]["quick" if quick else "full"]
    path = os.path.join(workdir, "case2.npz")
    np.savez(path, **make_case2(shape))
    methods = [m for m in ("jaxbrain", "sklearn") if m not in skip]
    results = {m: spawn(m, 2, quick, path, workdir) for m in methods}
    print(f"\nCase 2: layer sweep {shape}, alpha shared per ROI, {shape['folds']} folds + final fit per layer")
    print("| method | wall s | warm s | sklearn / method | peak MiB | fold alphas != sklearn | max abs cv-r diff | "
          "max abs test-r diff | committed layer |")
    print("|" + "---|" * 9)
    ref = results.get("sklearn")
    rows = []
    for m, (stats, arrays) in results.items():
        committed = int(np.argmax(arrays["cv_r"].mean(1)))
        if ref is not None:
            ndiff, _ = _alpha_diff(arrays["alpha"], ref[1]["alpha"])
            cvdiff = float(np.max(np.abs(arrays["cv_r"] - ref[1]["cv_r"])))
            rdiff = float(np.max(np.abs(arrays["test_r"] - ref[1]["test_r"])))
            speed = ref[0]["wall"] / stats["wall"]
        else:
            ndiff, cvdiff, rdiff, speed = -1, np.nan, np.nan, np.nan
        row = (f"| {m} | {stats['wall']:.1f} | {stats['warm']:.1f} | {speed:.1f} | {_fmt_mib(stats['peak'])} | "
               f"{ndiff} / {arrays['alpha'].size} | {cvdiff:.1e} | {rdiff:.1e} | {committed} |")
        rows.append(row)
        print(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=int, choices=[1, 2], action="append",
                        help="case(s) to run (default: both)")
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["jaxbrain", "jaxbrain_hostblas", "sklearn", "himalaya", "jaxbrain64", "torch"],
                        help="methods to leave out")
    parser.add_argument("--gpu", action="store_true", help="per-target LOO at NSD size vs PyTorch (see above)")
    parser.add_argument("--size", action="append", choices=list(GPU_SIZES),
                        help="GPU-mode size(s) (default: eighth, then nsd)")
    parser.add_argument("--chunk", type=int, default=8192, help="GPU mode: targets per chunk on the device")
    parser.add_argument("--repeats", type=int, default=2, help="GPU mode: calls per method (first one compiles)")
    parser.add_argument("--peak-tflops", type=float, default=67.0,
                        help="GPU mode: the device's dense float32 peak (H100 SXM: 67)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.case = (args.case or [1])[0]
        return run_worker(args)
    if args.gpu:
        with tempfile.TemporaryDirectory() as workdir:
            for size in args.size or ["eighth", "nsd"]:
                run_gpu(size, args.chunk, args.repeats, args.peak_tflops, args.skip, workdir)
        return None
    print(f"{os.cpu_count()} CPU(s); load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as workdir:
        for case in args.case or [1, 2]:
            if case == 1:
                run_case1(args.quick, args.skip, workdir)
            else:
                run_case2(args.quick, args.skip, workdir)
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
