"""Attention-probe training speed: one epoch of the multi-subject probe, jaxbrain against the same probe in PyTorch.

  python -m benchmarks.probe [--subjects 2] [--stimuli 512] [--tokens 197] [--channels 384] [--targets 100]
                             [--batch 256] [--threads 2]
      CPU, float32: samples/s of one epoch of ATTENTION-MS (Table S5 architecture: Linear(C, 384), LayerNorm,
      sinusoidal code, 16 queries, one pre-LN cross-attention block with 16 heads and dropout 0.3, final LN,
      per-subject heads; AdamW, clip 1.0, MSE) over every subject's rows in the epoch plan of
      :func:`jaxbrain.train.probing.epoch_plan`, jaxbrain (:class:`jaxbrain.train.probing.SystemTrainer`, whose
      step is :class:`jaxbrain.train.step.Trainer`'s) against a PyTorch transcription with the same shapes, batches,
      threads and precision. One warm-up epoch each (compilation) is not timed. Prints the ratio.

  python -m benchmarks.probe --gpu [--subjects 8] [--stimuli 9000] [--targets 2000] [--pool 9000]
      NSD-sized (8 subjects x 9,000 stimuli x 197 tokens x 384 channels), bf16 compute, batch 256: the epoch time
      of the full loop (host gather of float16 tokens from a pool of ``--pool`` distinct token maps that every
      subject indexes, transfer, step) and of the same number of steps on one device-resident batch (compute
      alone); the loop is input-bound when its epoch takes clearly longer than compute alone. ``--smoke`` runs
      this mode with tiny sizes on any backend (a check that the script works, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _data(args, dtype):
    from jaxbrain.train import probing
    rng = np.random.default_rng(0)
    pool = args.pool or args.subjects * args.stimuli
    tokens = rng.standard_normal((pool, args.tokens, args.channels), dtype=np.float32).astype(dtype)
    subjects = []
    for s in range(args.subjects):
        rows = (np.arange(args.stimuli) + s * args.stimuli) % pool
        y = rng.standard_normal((args.stimuli, args.targets)).astype(np.float32)
        subjects.append(probing.SubjectData(rows, y, rows[:2], y[:2], np.full(args.targets, 50.0)))
    return tokens, subjects


def jax_epoch(args, tokens, subjects, compute_dtype):
    """(seconds of one timed epoch, the system) for jaxbrain's MS probe."""
    from jaxbrain import probes
    from jaxbrain.train import probing
    cfg = probes.ProbeConfig(readout="attention")
    train = probing.TrainConfig(epochs=1, batch_size=args.batch, compute_dtype=compute_dtype)
    probing.SystemTrainer(cfg, train, tokens, subjects, seed=0).fit()  # compile
    system = probing.SystemTrainer(cfg, train, tokens, subjects, seed=0)
    began = time.perf_counter()
    state, _ = system.fit()
    return time.perf_counter() - began, system, state


class TorchProbe:
    """The same probe in PyTorch (nn.MultiheadAttention; heads as one Linear per subject)."""

    @staticmethod
    def build(n_tokens, n_channels, n_targets, d=384, n_queries=16, n_heads=16, dropout=0.3):
        import torch
        from torch import nn

        from jaxbrain.probes import sinusoidal_code

        class Probe(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj, self.norm = nn.Linear(n_channels, d), nn.LayerNorm(d, eps=1e-6)
                self.register_buffer("position", torch.from_numpy(sinusoidal_code(n_tokens, d)))
                self.queries = nn.Parameter(0.02 * torch.randn(n_queries, d))
                self.query_norm, self.final_norm = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
                self.attention = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
                self.dropout = nn.Dropout(dropout)
                self.heads = nn.ModuleList(nn.Linear(n_queries * d, n) for n in n_targets)

            def forward(self, tokens, subject):
                x = self.norm(self.proj(tokens)) + self.position
                q = self.queries.expand(x.shape[0], -1, -1)
                normed = self.query_norm(q)
                q = q + self.dropout(self.attention(normed, x, x, need_weights=False)[0])
                return self.heads[subject](self.final_norm(q).flatten(1))

        return Probe()


def torch_epoch(args, tokens, subjects):
    import torch

    from jaxbrain.train import probing
    torch.manual_seed(0)
    model = TorchProbe.build(args.tokens, args.channels, [s.n_targets for s in subjects])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    model.train()

    def epoch(index):
        for subject, rows in probing.epoch_plan([len(s.train_rows) for s in subjects], args.batch, 0, index):
            x = torch.from_numpy(np.asarray(tokens[subjects[subject].train_rows[rows]], np.float32))
            y = torch.from_numpy(subjects[subject].y_train[rows])
            loss = torch.nn.functional.mse_loss(model(x, subject), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    epoch(0)  # warm-up
    began = time.perf_counter()
    epoch(1)
    return time.perf_counter() - began


def cpu(args):
    import torch
    torch.set_num_threads(args.threads)
    tokens, subjects = _data(args, np.float32)
    n = sum(len(s.train_rows) for s in subjects)
    seconds_jax = jax_epoch(args, tokens, subjects, "float32")[0]
    seconds_torch = torch_epoch(args, tokens, subjects)
    print(f"one MS-probe epoch, {args.subjects} subjects x {args.stimuli} stimuli x {args.tokens} tokens x "
          f"{args.channels} channels, batch {args.batch}, float32, {args.threads} threads")
    print(f"  jaxbrain {n / seconds_jax:8.1f} samples/s ({seconds_jax:.2f} s)")
    print(f"  pytorch  {n / seconds_torch:8.1f} samples/s ({seconds_torch:.2f} s)")
    print(f"  ratio jaxbrain / pytorch: {seconds_torch / seconds_jax:.2f}")


def device(args):
    import jax
    tokens, subjects = _data(args, np.float16)
    n = sum(len(s.train_rows) for s in subjects)
    seconds, system, state = jax_epoch(args, tokens, subjects, "bfloat16")
    batch, frozen = system._batch(0, np.arange(min(args.batch, args.stimuli))), system._frozen(0)
    state, metrics = system.trainer.step(state, batch, frozen)
    jax.block_until_ready(metrics)
    began = time.perf_counter()
    for _ in range(system.steps_per_epoch):
        state, metrics = system.trainer.step(state, batch, frozen)
    jax.block_until_ready(metrics)
    compute = time.perf_counter() - began
    bound = "input-bound" if seconds > 1.3 * compute else "compute-bound"
    print(f"{jax.devices()[0].device_kind}: {args.subjects} subjects x {args.stimuli} stimuli x {args.tokens} x "
          f"{args.channels}, batch {args.batch}, bf16, {system.steps_per_epoch} steps")
    print(f"  epoch {seconds:.2f} s ({n / seconds:.0f} samples/s); compute alone {compute:.2f} s -> {bound}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", "--device", dest="gpu", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--subjects", type=int)
    parser.add_argument("--stimuli", type=int)
    parser.add_argument("--tokens", type=int, default=197)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--targets", type=int)
    parser.add_argument("--pool", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    defaults = dict(subjects=8, stimuli=9000, targets=2000) if args.gpu else dict(subjects=2, stimuli=512, targets=100)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke:
        args.subjects, args.stimuli, args.tokens, args.targets, args.batch = 2, 64, 17, 20, 32
    if args.gpu:
        args.pool = args.pool or min(9000, args.subjects * args.stimuli)
        device(args)
    else:
        os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true "
                                           f"intra_op_parallelism_threads={args.threads}")
        cpu(args)


if __name__ == "__main__":
    main()
