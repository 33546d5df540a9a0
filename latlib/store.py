"""The search's memory: every evaluated configuration, in a crash-safe file.

A ``SearchStore`` is an append-only JSONL file fsynced after each record, so a killed
search resumes where it stopped: stored configurations are read back instead of
re-evaluated. Its header carries a fingerprint of what the scores belong to (weights,
data, metric, cost model): a store is never reused for another setup. Every record
carries a digest of its fields and that fingerprint, so a score edited by hand or damaged
on disk is never read back as a result: it is reported and evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Config = tuple[int, ...]

STORE_KIND = "latlib-search-store"
STORE_VERSION = 2
# Version 1 records carry no digest. Such a store still opens (its fingerprint still
# has to match), but none of its scores is trusted: every record is reported and
# dropped, the file is rewritten as the current version, and the search evaluates
# those configurations again.
UNSIGNED_STORE_VERSIONS = (1,)
# Each rejected line is named up to this many times per load; the rest are counted.
MAX_REPORTED_LINES = 20


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EvaluatedConfig:
    """One evaluated configuration: its cost (MACs, lower is better), its score
    (dev metric, higher is better) and how long the evaluation took."""

    config: Config
    cost: float
    score: float
    # Wall time is a measurement, not part of the result: two runs that evaluate the
    # same configuration to the same score compare equal.
    seconds: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        # Normalise so that records built from lists / numpy ints compare and hash
        # equal to records read back from the store.
        object.__setattr__(self, "config", as_config(self.config))
        for name in ("cost", "score", "seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise TypeError(f"{name} must be a number, got {value!r}")
            value = float(value)
            # A NaN metric or cost means something upstream is broken; failing here
            # keeps it out of the store and out of every frontier comparison.
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r} for {self.config}")
            object.__setattr__(self, name, value)
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds}")

    @classmethod
    def from_json(cls, line: bytes | str) -> EvaluatedConfig:
        """A record from one line of a store; ``ValueError`` says what is wrong with it."""
        return cls.from_dict(_json_object(line))

    @classmethod
    def from_dict(cls, obj: Any) -> EvaluatedConfig:
        """A record from a parsed line (other keys, such as the digest, are ignored)."""
        if not isinstance(obj, dict) or not {"config", "cost", "score"} <= obj.keys():
            raise ValueError("expected an object with config, cost, score")
        if not isinstance(obj["config"], list):
            raise ValueError("config must be a list")
        try:
            return cls(
                config=tuple(obj["config"]),
                cost=obj["cost"],
                score=obj["score"],
                seconds=obj.get("seconds", 0.0),
            )
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "config": list(self.config),
            "cost": self.cost,
            "score": self.score,
            "seconds": self.seconds,
        }


def _json_object(line: bytes | str) -> Any:
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc


def canonical_json(value: Any) -> str:
    """One spelling per value (sorted keys, no spaces), so equal content hashes equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def record_digest(record: EvaluatedConfig, fingerprint: dict[str, Any]) -> str:
    """sha256 of a record's fields (``seconds`` included) and its store's fingerprint.

    A record edited or damaged after it was written, or copied from a store of another
    setup, no longer matches. This guards against accidents, not forgery: there is no
    secret key, so whoever edits a score on purpose can recompute the digest too.
    """
    payload = {"record": record.to_json(), "fingerprint": fingerprint}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def as_config(config: Iterable[Any]) -> Config:
    """A configuration as a tuple of Python ints (lists and numpy ints accepted)."""
    out = []
    for v in config:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"configuration entries must be ints, got {v!r}")
        out.append(int(v))
    return tuple(out)


# ------------------------------------------------------------------------ the store


class SearchStore:
    """Append-only JSONL record of every evaluated configuration.

    Line 1 is a header ``{"kind": "latlib-search-store", "version": 2,
    "fingerprint": {...}}``; the fingerprint names what the scores belong to (model,
    weights, data, metric, length mode) so that a store is never silently reused for
    a different model.  Every further line is one :class:`EvaluatedConfig` plus its
    ``"digest"`` (:func:`record_digest`, bound to the fingerprint).  Each append is
    flushed and fsynced: a kill loses at most the evaluation in flight.

    On load, a record whose digest is missing or does not verify is reported (a
    ``RuntimeWarning`` naming the file and line) and not used: the search evaluates
    that configuration again. The writer rewrites the file without such records, so
    the fresh result replaces the rejected one. Records of a version 1 store (written
    before records carried digests) are all treated this way, and the file becomes
    version 2. A line that is not a record at all stops the load, except a truncated
    last line (a kill in the middle of an append), which is cut off.

    One writer at a time. In a distributed run (``writer=None``) the main process
    loads or creates the file first and writes it; the others then read it and keep
    their records in memory only, so every process resumes from the same records.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fingerprint: dict[str, Any],
        writer: bool | None = None,
    ) -> None:
        self.path = Path(path)
        # Compare fingerprints as they will read back from JSON (tuples become
        # lists, keys are strings), so an identical fingerprint always matches.
        try:
            self.fingerprint: dict[str, Any] = json.loads(
                json.dumps(fingerprint, sort_keys=True, allow_nan=False)
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"fingerprint must be JSON-serialisable: {exc}") from exc
        if not isinstance(self.fingerprint, dict):
            raise TypeError("fingerprint must be a dict")
        self._records: dict[Config, EvaluatedConfig] = {}
        rank, world = _rank_and_world()
        self.writer = rank == 0 if writer is None else writer
        if self.writer:
            if self.path.exists():
                self._load()
            else:
                self._create()
        if writer is None and world > 1:
            _barrier()  # the main process has created, repaired or loaded the file
        if not self.writer and self.path.exists():
            self._load()

    # -- file handling

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomically([])

    def _write_atomically(self, records: Iterable[EvaluatedConfig]) -> None:
        """The header and ``records`` as the whole file, replacing it in one rename."""
        header = {"kind": STORE_KIND, "version": STORE_VERSION, "fingerprint": self.fingerprint}
        lines = [json.dumps(header, sort_keys=True) + "\n"]
        lines += [self._line(record) for record in records]
        # Write to a temporary file and rename it into place, so a kill can never leave
        # a store with half a header or with part of its records.
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _line(self, record: EvaluatedConfig) -> str:
        signed = {**record.to_json(), "digest": record_digest(record, self.fingerprint)}
        return json.dumps(signed, allow_nan=False) + "\n"

    def _load(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        # A file that ends with "\n" splits into a trailing empty chunk; anything
        # else in the last chunk is a line whose newline never made it to disk.
        ends_clean = lines[-1] == b""
        if ends_clean:
            lines.pop()
        not_store = f"{self.path} is not a latlib search store"
        try:
            header = json.loads(lines[0]) if lines else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict) or header.get("kind") != STORE_KIND:
            raise ValueError(f"{not_store} (missing or unreadable header)")
        version = header.get("version")
        if version != STORE_VERSION and version not in UNSIGNED_STORE_VERSIONS:
            raise ValueError(f"{not_store} of version {STORE_VERSION}: {version!r}")
        stored_fp = header.get("fingerprint")
        if stored_fp != self.fingerprint:
            raise ValueError(self._fingerprint_message(stored_fp))

        rejected: list[str] = []  # one message per record that is not used
        truncated = False
        good_bytes = len(lines[0]) + 1  # end of the last good line, newline included
        for lineno, line in enumerate(lines[1:], start=2):
            is_last = lineno == len(lines)
            try:
                obj = _json_object(line)
                rec = EvaluatedConfig.from_dict(obj)
            except ValueError as exc:
                if not is_last:
                    raise ValueError(
                        f"{self.path}: corrupt record on line {lineno}: {exc}"
                    ) from exc
                truncated = True
                if self.writer:  # a reader leaves the repair to the writer
                    # Killed in the middle of an append: drop the partial record and
                    # cut the file back so the next append starts on a fresh line.
                    warnings.warn(
                        f"{self.path}: dropping truncated last line {lineno} ({exc})",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                break
            good_bytes += len(line) + 1
            problem = self._digest_problem(obj.get("digest"), rec, version)
            if problem is not None:
                rejected.append(
                    f"{self.path} line {lineno}: {problem}, the record will be evaluated again"
                )
            elif rec.config not in self._records:
                self._records[rec.config] = rec
            elif self._records[rec.config] != rec:
                warnings.warn(
                    f"{self.path}: line {lineno} repeats configuration {rec.config}; "
                    "keeping the first record",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _report_rejected(rejected)
        if not self.writer:
            return
        if rejected or version != STORE_VERSION:
            # Never keep an unverified score on disk either: the store holds only the
            # records that verified, and the searches append fresh ones for the rest.
            self._write_atomically(self._records.values())
        elif truncated:
            self._truncate(good_bytes)
        elif not ends_clean:
            # The last record parsed but lost its newline: add it back.
            with open(self.path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())

    def _digest_problem(self, digest: Any, record: EvaluatedConfig, version: Any) -> str | None:
        """Why a record's digest does not vouch for it, or None when it does."""
        if version in UNSIGNED_STORE_VERSIONS:
            return f"no digest (written by store version {version})"
        if digest is None:
            return "no digest"
        if digest != record_digest(record, self.fingerprint):
            return "digest mismatch (edited or damaged after it was written)"
        return None

    def _truncate(self, size: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def _fingerprint_message(self, stored: Any) -> str:
        if not isinstance(stored, dict):
            return f"{self.path} has no usable fingerprint; pass another path or delete the file"
        missing = "<missing>"
        diffs = [
            f"{k}: stored {stored.get(k, missing)!r} vs now {self.fingerprint.get(k, missing)!r}"
            for k in sorted(set(stored) | set(self.fingerprint))
            if stored.get(k, missing) != self.fingerprint.get(k, missing)
        ]
        return (
            f"search store {self.path} was written for a different setup ("
            + "; ".join(diffs)
            + "). Its scores do not apply here: pass another store path or delete the file."
        )

    # -- mapping interface

    def __contains__(self, config: object) -> bool:
        try:
            return as_config(config) in self._records  # type: ignore[arg-type]
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self._records)

    def get(self, config: Sequence[int]) -> EvaluatedConfig | None:
        """The stored record for ``config``, or None."""
        return self._records.get(as_config(config))

    def records(self) -> list[EvaluatedConfig]:
        """All records in the order they were added."""
        return list(self._records.values())

    def add(self, record: EvaluatedConfig) -> None:
        """Append one record and make it durable before returning (a reader only keeps it
        in memory)."""
        if record.config in self._records:
            raise ValueError(f"configuration {record.config} is already in {self.path}")
        if not self.writer:
            self._records[record.config] = record
            return
        line = self._line(record)
        # One write of one whole line, then fsync: a kill leaves either the full
        # record or a partial last line, which loading tolerates.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._records[record.config] = record


def _report_rejected(messages: list[str]) -> None:
    """One warning per rejected record, the first ``MAX_REPORTED_LINES`` of them; then
    one that counts the rest (a whole version 1 store would otherwise flood the log)."""
    for message in messages[:MAX_REPORTED_LINES]:
        warnings.warn(message, RuntimeWarning, stacklevel=4)
    if len(messages) > MAX_REPORTED_LINES:
        warnings.warn(
            f"... and {len(messages) - MAX_REPORTED_LINES} more records of the same store "
            "will be evaluated again",
            RuntimeWarning,
            stacklevel=4,
        )


def _rank_and_world() -> tuple[int, int]:
    # Without torch imported there is no process group; not importing it keeps the
    # search pure Python for callers that never touch a model.
    if "torch" not in sys.modules:
        return 0, 1
    from .distributed import rank_and_world

    return rank_and_world()


def _barrier() -> None:
    from .distributed import barrier

    barrier()
