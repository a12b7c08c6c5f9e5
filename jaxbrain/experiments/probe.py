"""Trained readouts (attention probes SS/MS, MLP, low-rank, ridge) of a layer's tokens: Table 2 and Table S4.

Wires config -> ``jaxbrain.probe_runs`` (tokens, the six readouts per ROI and seed, resumable units with
per-epoch checkpoints) -> tables in the workdir: ``readouts.csv`` (every system and subject), ``table2.md/csv``
(readouts x benchmark/ROI, seeds averaged), ``table_s4.md/csv`` (mean r_NC and the geometric mean of parameters
per system per readout), ``pareto.png``; results.csv carries r, r_nc, parameters and n_pairs per subject.
"""

from __future__ import annotations

import pathlib

from jaxbrain import probe_runs, results


def run(config, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    table = probe_runs.run_all(config, workdir, fractions=(1.0,))
    summary = {"readouts": probe_runs.write_tables(table, workdir),
               "subjects": {bench: int(n) for bench, n in table.groupby("benchmark")["subject"].nunique().items()}}
    results.write_json(workdir / "summary.json", summary)
    print((workdir / "table2.md").read_text())
    print((workdir / "table_s4.md").read_text())
    return summary
