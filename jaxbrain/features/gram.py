"""The exact Gram matrix ``K = X X^T`` of a layer over all stimuli, accumulated batch by batch on the devices.

Each new batch ``x_b`` is stored on the device (rows spread over the data axis, in the extraction dtype) and
multiplied with every stored row, giving rows ``K[b, :b_end]`` of the lower block triangle; the upper triangle
is its transpose. Device memory is the stored features, ``N x D`` (split over the devices), and host memory one
``N x N`` float32 matrix. An exact Gram cannot avoid holding all of ``X``: for ``D > N`` nothing smaller
determines the ``X X^T`` rows of later stimuli. Storing ``X`` on the device avoids a second pass over the
stimuli (a second forward costs far more than the memory) and over the disk. Each batch multiplies with the
whole store (unfilled rows are zeros), ``B x N x D`` multiply-adds with one static shape; a triangular schedule
would halve that at the cost of per-batch shapes.

Beside ``K`` the accumulator keeps each stimulus' feature sum ``s_i = sum_d X_id`` (float64 on the host): with
``K`` and the dimension ``D`` it gives the correlation-distance RDM without the features
(:meth:`Gram.correlation_distances`), since ``cov(x_i, x_j) = (K_ij - s_i s_j / D) / D``.

With an out_dir the stored features are also written to disk, so that an interrupted run can refill the device
store and continue; that file and the partial rows of ``K`` are removed once ``K`` is complete.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxbrain import sharding
from jaxbrain.features import forward as forward_lib
from jaxbrain.features.store import Progress, Rows, file_stem, save_npy


@dataclasses.dataclass(frozen=True)
class Gram:
    """A finished Gram matrix ``kernel`` (N, N), the row sums of the features (N,) and their dimension D."""

    kernel: np.ndarray
    row_sums: np.ndarray
    dim: int

    def correlation_distances(self) -> np.ndarray:
        """``1 - corr(x_i, x_j)`` over features for every pair of stimuli (float64, (N, N))."""
        k = np.asarray(self.kernel, np.float64)
        s = np.asarray(self.row_sums, np.float64)
        cov = k - np.outer(s, s) / self.dim
        sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        return 1.0 - cov / np.outer(sd, sd)


def load_gram(out_dir: str | pathlib.Path, layer: str) -> Gram:
    """The Gram matrix of ``layer`` that :func:`extract` finished in ``out_dir``, with its row sums."""
    out_dir = pathlib.Path(out_dir)
    name = file_stem(layer, "gram")
    path = out_dir / "progress.json"
    entry = json.loads(path.read_text())["layers"].get(name, {}) if path.is_file() else {}
    if not entry.get("finished"):
        raise FileNotFoundError(f"{out_dir}: no finished Gram matrix of layer {layer!r}")
    return Gram(np.load(out_dir / f"{name}.npy", mmap_mode="r"), np.load(out_dir / f"{name}.rowsums.npy"),
                int(entry["dim"]))


def _gram_step(mesh, with_products: bool):
    def build():
        axis = sharding.DATA_AXIS

        def local(store, x, slot):
            store = jax.lax.dynamic_update_slice(store, x.astype(store.dtype), (slot, 0))
            if not with_products:
                return store
            everyone = jax.lax.all_gather(x.astype(store.dtype), axis, tiled=True)  # (B, D)
            products = jnp.einsum("bd,sd->bs", everyone, store, preferred_element_type=jnp.float32)
            return store, products, jnp.sum(x.astype(jnp.float32), axis=1)

        name = "gram" if with_products else "gram_store"
        out_specs = (P(axis), P(None, axis), P(axis)) if with_products else P(axis)
        mapped = jax.shard_map(forward_lib.traced(name, local), mesh=mesh, in_specs=(P(axis), P(axis), P()),
                               out_specs=out_specs, check_vma=False)
        return jax.jit(mapped, donate_argnums=0)

    return forward_lib.compiled_step(("gram", mesh, with_products), build)


def symmetrise_lower(k: np.ndarray, block: int = 2048) -> np.ndarray:
    """Fill the strict upper triangle of ``k`` in place from its lower triangle, block by block."""
    n = k.shape[0]
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        diag = k[i0:i1, i0:i1]
        k[i0:i1, i0:i1] = np.tril(diag) + np.tril(diag, -1).T
        k[i0:i1, i1:] = k[i1:, i0:i1].T
    return k


class GramAccumulator:
    """``K`` and the row sums of one layer's features, batch by batch from row ``start`` (earlier rows are
    refilled from the out_dir's feature file). ``add`` queues a batch on the device, ``write`` puts a queued
    batch's rows on the host or disk, ``finish`` returns the symmetric ``K``."""

    def __init__(self, mesh, n: int, dim: int, dtype, batch_rows: int, *, start: int = 0,
                 stem: pathlib.Path | None = None, writer: bool = True):
        fresh = start == 0
        self.n, self.dim, self.stem, self.writer, self.mesh = n, dim, stem, writer, mesh
        path = None if stem is None else pathlib.Path(f"{stem}.partial.npy")
        self.kernel_rows = Rows((n, n), np.float32, path, fresh, writer)
        self.sums = Rows((n,), np.float64, None if stem is None else pathlib.Path(f"{stem}.rowsums.npy"), fresh,
                         writer)
        self.features = None if stem is None else Rows((n, dim), dtype, pathlib.Path(f"{stem}.features.npy"),
                                                       fresh, writer)
        n_dev = sharding.data_size(mesh)
        self.batch_rows, self.local_batch = batch_rows, batch_rows // n_dev
        self.rows = sharding.process_rows(mesh, batch_rows)
        self.slots_local = (-(-start // batch_rows) + -(-(n - start) // batch_rows)) * self.local_batch
        self.slot_index = np.full(n_dev * self.slots_local, -1, np.int64)
        with jax.set_mesh(mesh):
            self.store = jax.device_put(jnp.zeros((n_dev * self.slots_local, dim), dtype),
                                        sharding.batch_sharding(mesh))
        self.step_no = 0
        self._refill(start)

    def _assign_slots(self, lo: int, hi: int) -> None:
        """Record which stimulus each store slot of this step holds (device d gets batch rows d*lb..)."""
        for r in range(hi - lo):
            device, row = divmod(r, self.local_batch)
            self.slot_index[device * self.slots_local + self.step_no * self.local_batch + row] = lo + r
        self.step_no += 1

    def _refill(self, start: int) -> None:
        put = _gram_step(self.mesh, with_products=False)
        with jax.set_mesh(self.mesh):
            for lo in range(0, start, self.batch_rows):
                hi = min(lo + self.batch_rows, start)
                block = np.zeros((self.batch_rows, self.dim), self.store.dtype)
                block[:hi - lo] = self.features.read(lo, hi)
                local = sharding.global_batch(block[self.rows[0]:self.rows[1]], self.mesh)
                self.store = put(self.store, local, jnp.int32(self.step_no * self.local_batch))
                self._assign_slots(lo, hi)

    def add(self, x: jax.Array, lo: int, hi: int):
        """Queue the batch ``x`` (features of stimuli ``lo:hi``, padded to the batch) on the device."""
        with jax.set_mesh(self.mesh):
            slot = jnp.int32(self.step_no * self.local_batch)
            self.store, products, sums = _gram_step(self.mesh, with_products=True)(self.store, x, slot)
        self._assign_slots(lo, hi)
        return lo, hi, x, products, sums, self.slot_index.copy()

    def write(self, queued) -> None:
        lo, hi, x, products, sums, slot_index = queued
        count, filled = hi - lo, slot_index >= 0
        block = sharding.to_host(products)[:count]
        k_rows = np.zeros((count, self.n), np.float32)
        k_rows[:, slot_index[filled]] = block[:, filled]
        row_sums = sharding.to_host(sums)[:count]
        features = None if self.features is None else sharding.to_host(x)[:count]
        self.kernel_rows.write(lo, k_rows)
        self.sums.write(lo, row_sums)
        if features is not None:
            self.features.write(lo, features)

    def flush(self) -> None:
        for rows in (self.kernel_rows, self.sums, self.features):
            if rows is not None:
                rows.flush()

    def finish(self, progress: Progress, stem_name: str) -> np.ndarray:
        """The symmetric ``K`` (saved as ``{stem}.npy`` with an out_dir, scratch files removed)."""
        del self.store
        partial = self.kernel_rows.read(0, self.n)
        full = symmetrise_lower(partial if partial.flags.writeable else partial.copy())
        for rows in (self.kernel_rows, self.sums, self.features):
            if rows is not None:
                rows.close()
        if self.stem is None or not self.writer:
            return full
        save_npy(pathlib.Path(f"{self.stem}.npy"), full)
        progress.finish(stem_name)
        for scratch in (".partial.npy", ".features.npy"):
            pathlib.Path(f"{self.stem}{scratch}").unlink(missing_ok=True)
        return full
