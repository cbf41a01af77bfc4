"""Objectives for ``hpo-slurm simulate`` and the benchmarks in ``benchmarks/``.

Each is ``f(hparams, length) -> {"loss": value, "seconds": cumulative training seconds}``; a run
that continues a trial from length ``a`` to ``b`` costs ``seconds(b) - seconds(a)``.

* ``hartmann``: multi-fidelity Hartmann-6 with mfpbench's fidelity presets (good, moderate, bad,
  terrible); length = fidelity, 1..100.
* ``curves``: parametric learning curves whose early/final Spearman rank correlation is a parameter
  and whose per-unit cost is lognormal per configuration (stragglers).
* ``digits``: a real learning-curve table: 576 configurations of an MLP on scikit-learn's digits x 30
  epochs, validation loss and measured seconds per epoch, looked up (``benchmarks/make_digits_table.py``
  made it).
* ``zero``: costs nothing and computes almost nothing, to measure the driver's own overhead.
"""

from hpo_slurm.benchmarks._hashing import hash_normals, hash_uniforms

__all__ = ["hash_normals", "hash_uniforms"]
