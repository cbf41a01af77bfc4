"""The store's reads for pages over large experiments (the dashboard): a page of trials sorted and
filtered in SQL, validation curves of chosen trials through the trial index, the steps of the
best-so-far line picked by SQLite, and the runs' intervals read row by row, so no read holds a whole
table in memory.

``StoreReads`` is a base of ``Store`` (store.py); like it, this module is code that speaks SQL and
nothing outside the two does. A metric is picked out of each metrics row with SQLite's
``json_extract``; a row whose JSON SQLite cannot read (Python's ``NaN`` and ``Infinity``) is decoded in
Python instead, so such a row never hides the other values it holds.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from hpo_slurm.experiment.rows import TrialRow

TRIAL_SORT_COLUMNS = ("id", "state", "best_metric", "latest_metric", "validated_length", "restarts",
                      "preemptions", "created_at", "ended_at")
"""The columns a page of trials can be sorted by."""

Point = Tuple[int, float]  # (length, value)


def _json_path(key: str) -> str:
    """The JSON path of a top-level key, quoted so dots and brackets in metric names stay literal."""
    return '$."' + key.replace('"', '\\"') + '"'


def _number(value: Any) -> Optional[float]:
    """A finite float, or None for anything else (missing, text, booleans, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _like_pattern(text: str, anywhere: bool = True) -> str:
    """A LIKE pattern (escape character backslash) matching ``text`` anywhere, or at the start."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%" if anywhere else f"{escaped}%"


class StoreReads:
    """Paged and streamed reads; ``self._conn`` is the store's connection."""

    _conn: sqlite3.Connection

    def _metric_rows(self, sql: str, params: List[Any], metric: str) -> Iterator[Tuple[Any, ...]]:
        """Rows of ``sql``, whose first selected columns are ``value, raw`` (see ``_metric_columns``),
        as (metric value or None, *the other columns), one row at a time."""
        for value, raw, *rest in self._conn.execute(sql, params):
            if raw is not None:
                try:
                    value = json.loads(raw).get(metric)
                except (ValueError, AttributeError):
                    value = None
            yield (_number(value), *rest)

    @staticmethod
    def _metric_columns() -> str:
        """The value of the metric where SQLite can read the row's JSON; the raw text where it cannot."""
        return ("CASE WHEN json_valid(metrics) THEN json_extract(metrics, ?) END, "
                "CASE WHEN json_valid(metrics) THEN NULL ELSE metrics END")

    def trial_page(self, sort: str = "id", descending: bool = False, states: Sequence[str] = (),
                   text: str = "", offset: int = 0, limit: int = 50) -> Tuple[int, List[TrialRow]]:
        """(how many trials match, the ``limit`` matching trials from ``offset``) sorted by ``sort`` (one
        of TRIAL_SORT_COLUMNS; trials without a value last, ties by id). ``states`` keeps trials in
        those states; ``text`` is words that must all match: ``name=value`` (a hyperparameter, dotted
        when nested, whose value starts with ``value``), else the trial's id or text in its
        hyperparameters."""
        if sort not in TRIAL_SORT_COLUMNS:
            raise ValueError(f"cannot sort trials by {sort!r}")
        where, params = [], []  # type: List[str], List[Any]
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params += list(states)
        for token in text.split():
            name, equals, value = token.partition("=")
            if equals and name and value:  # name=value: the hyperparameter's value starts with value
                where.append("CAST(json_extract(hparams, ?) AS TEXT) LIKE ? ESCAPE '\\'")
                params += ["$." + ".".join('"' + part.replace('"', '\\"') + '"' for part in name.split(".")),
                           _like_pattern(value, anywhere=False)]
            else:  # the trial's id, or text anywhere in its hyperparameters (as JSON, or as their values)
                where.append("(CAST(id AS TEXT) = ? OR hparams LIKE ? ESCAPE '\\' OR hparams LIKE ? ESCAPE '\\')")
                params += [token, _like_pattern(token), _like_pattern(json.dumps(token)[1:-1])]
        clause = " WHERE " + " AND ".join(where) if where else ""
        matched = self._conn.execute(f"SELECT COUNT(*) FROM trials{clause}", params).fetchone()[0]
        order = "DESC" if descending else "ASC"
        # id needs no sort (the table's key); nullable columns put their NULLs last
        ordering = f"id {order}" if sort == "id" else f"[{sort}] IS NULL, [{sort}] {order}, id"
        cursor = self._conn.execute(f"SELECT * FROM trials{clause} ORDER BY {ordering} LIMIT ? OFFSET ?",
                                    [*params, int(limit), int(offset)])
        names = [column[0] for column in cursor.description]
        return matched, [dict(zip(names, row)) for row in cursor.fetchall()]  # type: ignore[misc]

    def trials_by_id(self, trial_ids: Sequence[int]) -> List[TrialRow]:
        """The trials among ``trial_ids`` that exist, in id order."""
        if not trial_ids:
            return []
        cursor = self._conn.execute(
            f"SELECT * FROM trials WHERE id IN ({', '.join('?' * len(trial_ids))}) ORDER BY id", list(trial_ids))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]  # type: ignore[misc]

    def trial_sample(self, limit: int, best: int, smaller_is_better: bool) -> List[TrialRow]:
        """At most ``limit`` + ``best`` scored trials (with a best metric): the ``best`` best, and
        trials evenly spread over the ids (every k-th id) up to ``limit``; in id order."""
        count = self._conn.execute("SELECT COUNT(*) FROM trials WHERE best_metric IS NOT NULL").fetchone()[0]
        step = max(1, math.ceil(count / max(1, limit)))
        order = "ASC" if smaller_is_better else "DESC"
        cursor = self._conn.execute(
            "SELECT * FROM trials WHERE best_metric IS NOT NULL AND (id % ? = 0 OR id IN "
            f"(SELECT id FROM trials WHERE best_metric IS NOT NULL ORDER BY best_metric {order}, id LIMIT ?)) "
            "ORDER BY id", [step, int(best)])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]  # type: ignore[misc]

    def scored_trial_count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM trials WHERE best_metric IS NOT NULL").fetchone()[0]

    def lengths_reached(self) -> List[int]:
        """The distinct lengths at which trials paused, stopped or completed (ASHA's rungs, PBT's round
        ends), ascending; running and failed trials, which stop anywhere, are left out."""
        return [row[0] for row in self._conn.execute(
            "SELECT DISTINCT validated_length FROM trials WHERE validated_length > 0 "
            "AND state IN ('PAUSED', 'STOPPED_EARLY', 'COMPLETED') ORDER BY 1")]

    def validation_curves(self, trial_ids: Sequence[int], metric: str) -> Dict[int, List[Point]]:
        """Trial id -> [(length, value)] of ``metric`` in its validations, by length; a length reported
        twice keeps the later report; rows without a finite value are left out. Read through the trial
        index: the cost follows the chosen trials, not the table."""
        if not trial_ids:
            return {}
        by_trial: Dict[int, Dict[int, float]] = {}
        sql = (f"SELECT {self._metric_columns()}, trial_id, length FROM metrics "
               f"WHERE trial_id IN ({', '.join('?' * len(trial_ids))}) AND kind = 'validation' ORDER BY id")
        for value, trial_id, length in self._metric_rows(sql, [_json_path(metric), *trial_ids], metric):
            if value is not None:
                by_trial.setdefault(trial_id, {})[length] = value
        return {trial_id: sorted(points.items()) for trial_id, points in sorted(by_trial.items())}

    def trial_metric_count(self, trial_id: int, kind: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM metrics WHERE trial_id = ? AND kind = ?",
                                  [trial_id, kind]).fetchone()[0]

    def trial_metric_rows(self, trial_id: int, limit: int, kind: str) -> List[Dict[str, Any]]:
        """The last ``limit`` metrics lines of ``kind`` of one trial in the order they were ingested,
        ``metrics`` decoded (NaN and infinities become None, so the rows are plain JSON)."""
        rows = self._conn.execute(
            "SELECT kind, length, metrics, time, run_id FROM metrics WHERE trial_id = ? AND kind = ? "
            "ORDER BY id DESC LIMIT ?", [trial_id, kind, int(limit)]).fetchall()
        decoded = []
        for kind, length, text, moment, run_id in reversed(rows):
            try:
                values = json.loads(text)
            except ValueError:
                values = {}
            plain = {key: (_number(v) if isinstance(v, float) else v) for key, v in values.items()} \
                if isinstance(values, dict) else {}
            decoded.append({"kind": kind, "length": length, "metrics": plain, "time": moment, "run_id": run_id})
        return decoded

    def best_candidates(self, metric: str, smaller_is_better: bool,
                        after_id: int = 0) -> Tuple[List[Tuple[float, int, float, int]], int]:
        """(candidates, last id): among the validations ingested after metrics row ``after_id``, every
        one that may be a step of the best-so-far line of ``metric``, as (time, row id, value, trial
        id), and the id of the last metrics row looked at. SQLite picks the rows that beat every
        earlier one of the range (by time, then id) with a window function over the rows whose JSON it
        reads; the rows it cannot read (NaN and infinities elsewhere in them) are decoded here and
        returned whole. A row of the range that is neither is beaten by an earlier row of the range,
        so it is never a step. Booleans, text and non-finite values are not values."""
        last_id = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM metrics").fetchone()[0]
        path = _json_path(metric)
        best, beats = ("MIN", "<") if smaller_is_better else ("MAX", ">")
        readable = self._conn.execute(
            "SELECT time, id, value, trial_id FROM ("
            f"  SELECT time, id, value, trial_id, {best}(value) OVER (ORDER BY time, id "
            "      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM ("
            "    SELECT time, id, trial_id, json_extract(metrics, ?) AS value FROM metrics"
            "    WHERE id > ? AND id <= ? AND kind = 'validation' AND json_valid(metrics)"
            "      AND json_type(metrics, ?) IN ('integer', 'real')))"
            f" WHERE before IS NULL OR value {beats} before", [path, after_id, last_id, path]).fetchall()
        unreadable: List[Tuple[float, int, float, int]] = []  # only their own running improvements
        for value, moment, row_id, trial_id in self._metric_rows(
                "SELECT NULL, metrics, time, id, trial_id FROM metrics WHERE id > ? AND id <= ? "
                "AND kind = 'validation' AND NOT json_valid(metrics) ORDER BY time, id", [after_id, last_id], metric):
            if value is not None and (not unreadable or (value < unreadable[-1][2] if smaller_is_better
                                                         else value > unreadable[-1][2])):
                unreadable.append((moment, row_id, value, trial_id))
        return [(m, i, float(v), t) for m, i, v, t in readable] + unreadable, last_id

    def run_intervals(self, now: float) -> Iterator[Tuple[float, float]]:
        """(started_at, ended_at) of every run that started, one at a time; a run still going ends
        ``now`` (or at its start, if that is later)."""
        return iter(self._conn.execute(
            "SELECT started_at, COALESCE(NULLIF(ended_at, 0), MAX(started_at, ?)) FROM runs WHERE started_at > 0",
            [now]))
