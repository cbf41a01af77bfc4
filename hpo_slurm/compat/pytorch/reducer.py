"""Metric reduction: Determined's ``Reducer`` (how ``evaluate_batch`` metrics combine over batches),
``MetricReducer`` (a trial's own metric over a training window or a validation, gathered from every
rank), and the averages the trainer reports.

Validation metrics from ``evaluate_batch`` are reduced over every batch of every rank. ``Reducer.AVG``
(the default) weights each batch by its length (``PyTorchTrial.get_batch_length``), so a smaller last
batch counts for its records and the result is the mean over the whole validation set; ``SUM``, ``MAX``
and ``MIN`` combine the per-batch values. Training metrics are the mean over the window's batches of
every rank. Values may be numbers, numpy values or tensors (a tensor of several elements is reduced
element-wise and reported as a list).
"""

from __future__ import annotations

import abc
import enum
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

AllGather = Callable[[Any], List[Any]]


class Reducer(enum.Enum):
    AVG = 1
    SUM = 2
    MAX = 3
    MIN = 4


class MetricReducer(metaclass=abc.ABCMeta):
    """A custom metric: the trial feeds it values its own way (``update(...)``); after every training
    window (or validation) each rank's ``per_slot_reduce()`` is gathered and ``cross_slot_reduce`` of the
    list (rank order) is the metric. ``reset()`` starts every window."""

    @abc.abstractmethod
    def reset(self) -> None: ...

    @abc.abstractmethod
    def per_slot_reduce(self) -> Any: ...

    @abc.abstractmethod
    def cross_slot_reduce(self, per_slot_metrics: List[Any]) -> Any: ...


class _SimpleReducer(MetricReducer):
    """A reduction function over every value given to ``update`` on every rank (ranks' values in rank order)."""

    def __init__(self, fn: Callable[[List[Any]], Any]):
        self.fn = fn
        self.values: List[Any] = []

    def reset(self) -> None:
        self.values = []

    def update(self, value: Any) -> None:
        self.values.append(value)

    def per_slot_reduce(self) -> Any:
        return self.values

    def cross_slot_reduce(self, per_slot_metrics: List[Any]) -> Any:
        return self.fn([value for values in per_slot_metrics for value in values])


class ReducerRegistry:
    """The reducers a trial wrapped (``context.wrap_reducer``), for training windows, validations or both."""

    def __init__(self) -> None:
        self._entries: List[Dict[str, Any]] = []

    def wrap(self, reducer: Union[Callable, MetricReducer], name: Optional[str], for_training: bool,
             for_validation: bool) -> Union[MetricReducer, Any]:
        if not isinstance(reducer, MetricReducer):
            if not callable(reducer):
                raise TypeError("wrap_reducer takes a MetricReducer or a function of a list of values")
            reducer = _SimpleReducer(reducer)
        if name is not None and any(e["name"] == name for e in self._entries):
            raise ValueError(f"a reducer named {name!r} is already wrapped")
        if not (for_training or for_validation):
            raise ValueError("wrap_reducer: for_training and for_validation cannot both be False")
        reducer.reset()
        self._entries.append({"reducer": reducer, "name": name, "training": for_training,
                              "validation": for_validation})
        return reducer

    def reset(self, for_training: bool) -> None:
        for entry in self._selected(for_training):
            entry["reducer"].reset()

    def reduce(self, for_training: bool, allgather: AllGather) -> Dict[str, Any]:
        """The wrapped reducers' metrics over the window (every rank calls this; all get them)."""
        out: Dict[str, Any] = {}
        for entry in self._selected(for_training):
            value = entry["reducer"].cross_slot_reduce(allgather(entry["reducer"].per_slot_reduce()))
            if entry["name"] is None:
                if not isinstance(value, dict):
                    raise TypeError("a reducer wrapped without a name must return a dict of metrics")
                out.update(value)
            else:
                if isinstance(value, dict):
                    raise TypeError(f"reducer {entry['name']!r} was wrapped with a name: return one value, not a dict")
                out[entry["name"]] = value
        return out

    def _selected(self, for_training: bool) -> List[Dict[str, Any]]:
        return [e for e in self._entries if e["training" if for_training else "validation"]]


def as_value(value: Any) -> Any:
    """A metric as a float64 scalar or numpy array (tensors detached and moved to the CPU); other
    values (strings, None) are returned unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", dtype=torch.float64).numpy()
    if isinstance(value, (bool, str)) or value is None:
        return value
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return value
    return array if array.ndim else np.float64(array)


def plain(value: Any) -> Any:
    """A metric as a plain Python value: a tensor or numpy value becomes a number (a list when it has
    several elements); anything else is returned unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else float(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def average_training(batch_metrics: Sequence[Mapping[str, Any]], allgather: AllGather) -> Dict[str, Any]:
    """The mean of each metric over every batch of every rank (each rank's ``batch_metrics`` already
    ``as_value``). Every rank calls this and gets the result."""
    sums: Dict[str, Any] = {}
    counts: Dict[str, int] = {}
    for metrics in batch_metrics:
        for key, value in metrics.items():
            if value is None or isinstance(value, str):
                continue
            sums[key] = sums[key] + value if key in sums else value
            counts[key] = counts.get(key, 0) + 1
    total: Dict[str, Any] = {}
    total_counts: Dict[str, int] = {}
    for rank_sums, rank_counts in allgather((sums, counts)):
        for key, value in rank_sums.items():
            total[key] = total[key] + value if key in total else value
            total_counts[key] = total_counts.get(key, 0) + rank_counts[key]
    return {key: plain(total[key] / total_counts[key]) for key in sorted(total)}


def reduce_validation(batch_metrics: Sequence[Mapping[str, Any]], lengths: Sequence[int],
                      reducers: Union[Reducer, Mapping[str, Reducer]], allgather: AllGather) -> Dict[str, Any]:
    """Validation metrics over every batch of every rank (see the module docstring). Every rank calls
    this (a rank may have no batch) and gets the result. ``ValueError`` when batches report different
    metric names or a reducer is missing for one."""
    keys = _same_keys(batch_metrics)
    partial: Dict[str, Any] = {}
    for key in keys or ():
        values = [m[key] for m in batch_metrics]
        kind = _reducer_for(reducers, key)
        if kind is Reducer.AVG:
            partial[key] = (sum(v * n for v, n in zip(values, lengths)), int(sum(lengths)))
        elif kind is Reducer.SUM:
            partial[key] = sum(values[1:], values[0])
        elif kind is Reducer.MAX:
            partial[key] = np.max(np.stack(values), axis=0)
        else:
            partial[key] = np.min(np.stack(values), axis=0)
    gathered = [(rank_keys, rank_partial) for rank_keys, rank_partial in allgather((keys, partial))
                if rank_keys is not None]
    if not gathered:
        raise RuntimeError("the validation data loader gave no batch on any rank")
    keys = gathered[0][0]
    for rank_keys, _ in gathered:
        if rank_keys != keys:
            raise ValueError(f"validation metric names differ between ranks: {sorted(keys)} != {sorted(rank_keys)}")
    out: Dict[str, Any] = {}
    for key in keys:
        parts = [rank_partial[key] for _, rank_partial in gathered]
        kind = _reducer_for(reducers, key)
        if kind is Reducer.AVG:
            weighted = sum((p[0] for p in parts[1:]), parts[0][0])
            out[key] = plain(weighted / sum(p[1] for p in parts))
        elif kind is Reducer.SUM:
            out[key] = plain(sum(parts[1:], parts[0]))
        elif kind is Reducer.MAX:
            out[key] = plain(np.max(np.stack(parts), axis=0))
        else:
            out[key] = plain(np.min(np.stack(parts), axis=0))
    return out


def _same_keys(batch_metrics: Sequence[Mapping[str, Any]]) -> Optional[List[str]]:
    keys: Optional[List[str]] = None
    for metrics in batch_metrics:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"evaluate_batch must return a dict of metrics, got {type(metrics).__name__}")
        names = sorted(metrics)
        if keys is None:
            keys = names
        elif names != keys:
            raise ValueError(f"validation metric names must match across batches: {keys} != {names}")
    return keys


def _reducer_for(reducers: Union[Reducer, Mapping[str, Reducer]], key: str) -> Reducer:
    if isinstance(reducers, Reducer):
        return reducers
    if key not in reducers:
        raise ValueError(f"evaluation_reducer() gives no reducer for metric {key!r}: give one Reducer or one per metric")
    found = reducers[key]
    if not isinstance(found, Reducer):
        raise TypeError(f"evaluation_reducer() for {key!r}: expected a determined.pytorch.Reducer, got {found!r}")
    return found
