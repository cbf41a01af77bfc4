"""Determined's training lengths (``Batch``, ``Epoch``, ``Record``) and how the trainer turns them into
batch counts.

A ``TrainUnit`` holds an ``int`` (a period: ``Batch(100)`` is every 100 batches; a value below 1 means
every batch or epoch) or a container of ints (a schedule: ``Batch([5, 30])`` is after batches 5 and 30).
Batches are global batches: one optimizer step of every rank. An epoch ends after the trainer's epoch
length in batches (``trainer``'s docstring says how it is found); a ``Record`` length becomes batches of
the global batch size, rounded down and at least 1, as Determined does.

Lengths in an experiment config (``min_validation_period: {batches: 100}``) read with ``from_config``.
"""

from __future__ import annotations

from collections import abc
from typing import Any, Mapping, Optional, Union

UNITS = ("batches", "records", "epochs")


class TrainUnit:
    """A length, a period or a schedule (see the module docstring)."""

    def __init__(self, value: Union[int, abc.Container]):
        if isinstance(value, bool) or not isinstance(value, (int, abc.Container)):
            raise TypeError(f"{type(self).__name__} takes an int or a container of ints, got {value!r}")
        self.value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value!r})"

    def __eq__(self, other: Any) -> bool:
        return type(self) is type(other) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self.value)))

    def should_stop(self, step_num: int) -> bool:
        """Whether ``step_num`` (batches or epochs completed, in this unit) ends a period or is in the
        schedule."""
        if isinstance(self.value, int):
            if self.value < 1:
                return True
            return step_num != 0 and step_num % self.value == 0
        return step_num in self.value


class Batch(TrainUnit):
    """A length in global batches."""

    @staticmethod
    def _from_records(records: int, global_batch_size: int) -> "Batch":
        return Batch(records_to_batches(records, global_batch_size))


class Epoch(TrainUnit):
    """A length in epochs (see the trainer for the epoch length)."""


class Record(TrainUnit):
    """A length in records; the trainer turns it into batches of the global batch size."""


def records_to_batches(records: int, global_batch_size: int) -> int:
    """Determined's rounding: whole global batches, at least one."""
    if global_batch_size < 1:
        raise ValueError(f"global batch size must be positive, got {global_batch_size}")
    return max(records // global_batch_size, 1)


def from_config(value: Any, what: str) -> Optional[TrainUnit]:
    """A config length (``{"batches": 100}``, ``{"records": n}`` or ``{"epochs": n}``) as a ``TrainUnit``;
    None when it is absent or zero. ``ValueError`` naming ``what`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError(f"{what}: expected one of {{batches: N}}, {{records: N}}, {{epochs: N}}, got {value!r}")
    (unit, amount), = value.items()
    if unit not in UNITS or isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"{what}: expected one of {{batches: N}}, {{records: N}}, {{epochs: N}}, got {value!r}")
    if amount == 0:
        return None
    return {"batches": Batch, "records": Record, "epochs": Epoch}[unit](amount)


def of_unit(unit: str, amount: int) -> TrainUnit:
    """``amount`` of the search's ``unit`` (batches, records or epochs) as a ``TrainUnit``."""
    if unit not in UNITS:
        raise ValueError(f"unknown length unit {unit!r}: expected one of {', '.join(UNITS)}")
    return {"batches": Batch, "records": Record, "epochs": Epoch}[unit](amount)


class Boundary:
    """When a period or schedule is reached, in batches trained: ``reached(batches, epoch_end, epochs)``
    is true after the batch that completes it. ``Record`` units are turned into batches of
    ``global_batch_size`` (which must then be known)."""

    def __init__(self, unit: Optional[TrainUnit], global_batch_size: Optional[int]):
        if isinstance(unit, Record):
            if not global_batch_size:
                raise ValueError(f"{unit!r} needs the global batch size (hyperparameter global_batch_size, "
                                 "or the training DataLoader's batch_size)")
            if isinstance(unit.value, int):
                unit = Batch(records_to_batches(unit.value, global_batch_size) if unit.value > 0 else 0)
            else:
                unit = Batch({records_to_batches(r, global_batch_size) for r in unit.value})  # type: ignore[union-attr]
        self.unit = unit

    def reached(self, batches: int, epoch_end: bool, epochs: int) -> bool:
        if self.unit is None:
            return False
        if isinstance(self.unit, Epoch):
            return epoch_end and self.unit.should_stop(epochs)
        return self.unit.should_stop(batches)
