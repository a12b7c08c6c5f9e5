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

Every method runs in its own subprocess; peak memory is that process's ru_maxrss minus its resident size once
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
# Driver
# ----------------------------------------------------------------------------------------------------------------


def run_worker(args):
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
    env = dict(os.environ)
    if method == "jaxbrain_hostblas":  # large float32 products through numpy's BLAS (see jaxbrain.ridge._dot)
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
                        choices=["jaxbrain", "jaxbrain_hostblas", "sklearn", "himalaya", "jaxbrain64"],
                        help="methods to leave out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.case = args.case[0]
        return run_worker(args)
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
