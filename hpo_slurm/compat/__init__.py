"""Determined's training APIs on hpo-slurm: a compatibility layer for scripts written for Determined.

A script that does ``import determined as det`` and ``with det.core.init() as core_context:`` runs
as an hpo-slurm trial unchanged, with no ``determined`` package installed. The modules here implement
that API over ``hpo_slurm.trial.TrialContext`` (the run's spec, metric lines, published checkpoint
folders, agreed stops); ``hpo_slurm/compat/site/determined/`` holds the top-level ``determined``
package the script imports, made of plain forwarding modules, and ``package_choice`` decides whether
a trial sees it (see that module for the rule).

    errors         ``Unsupported``: a Determined feature hpo-slurm does not offer (one line, what to do)
    storage        Determined storage ids <-> checkpoint folders of the experiment
    cluster_info   ``get_cluster_info()``, ``ClusterInfo``, ``TrialInfo``
    distributed    ``DistributedContext`` (object collectives over torch.distributed)
    core           ``init()`` and the ``Context`` it returns (train, checkpoint, preempt, searcher)
    launch         ``python3 -m determined.launch.*`` on hpo-slurm
    package_choice which ``determined`` a trial imports
    pytorch        Determined's ``PyTorchTrial`` and ``Trainer``

This is the job side: it imports only the standard library, ``hpo_slurm.core``, ``hpo_slurm.trial``
and ``hpo_slurm.torch``. Outside ``pytorch`` (imported only by training code that asks for
``det.pytorch``), torch is imported lazily, inside the functions that need it. Never yaml, sqlite,
rich or click, and nothing from the driver's layers.
"""
