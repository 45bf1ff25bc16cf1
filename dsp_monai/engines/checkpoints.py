"""Crash-safe checkpoints: atomic writes that keep the previous checkpoint, and a resume that skips a damaged one.

A run killed at any moment (``kill -9``, a power cut after the file system has flushed) leaves in its checkpoint folder
only complete checkpoints: each is written to a hidden temporary file in the same folder, flushed to disk (fsync),
then renamed over its final name (an atomic step), and an older checkpoint is deleted only after its successor is
complete. Running the same command again resumes from the newest checkpoint that reads back whole; a damaged one
(truncated or altered by something else) is reported by name and the previous one is used.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = ["AtomicDiskSaver", "CrashSafeCheckpointSaver", "IterationSnapshots", "ResumeFromCheckpoint",
           "checkpoint_problem", "saved_checkpoints"]

logger = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"


def saved_checkpoints(folder: str, pattern: str = "checkpoint_epoch=*.pt") -> list[tuple[int, str]]:
    """The checkpoints of ``folder`` whose names match ``pattern`` (MONAI CheckpointSaver's names, the number after
    the last ``=`` being the epoch or iteration), as ``(number, path)`` pairs, newest first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(folder), pattern)):
        match = re.search(r"=(\d+)\.pt$", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def checkpoint_problem(path: str) -> str | None:
    """Why the checkpoint file at ``path`` cannot be loaded, or None when it reads back whole.

    A ``torch.save`` file is a zip archive whose members carry CRC-32 checksums: a truncated file loses its central
    directory, an altered byte fails its member's checksum. Reads the whole file (no unpickling).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"{type(error).__name__}: {error}"
    if damaged is not None:
        return f"member {damaged} fails its CRC-32 checksum"
    return None


def _writer_alive(temporary_name: str) -> bool:
    """Whether the process that named a temporary file ``.<name>.<pid>.<random>.tmp`` still runs on this machine
    (another run writing to the same folder); False when it is gone or the name holds no process id."""
    match = re.search(r"\.(\d+)\.[^.]*" + re.escape(TEMPORARY_SUFFIX) + "$", temporary_name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicDiskSaver(DiskSaver):
    """ignite's DiskSaver writing each checkpoint atomically and durably, and deleting the checkpoints that ignite's
    ``Checkpoint`` retires only once their successor is complete.

    A checkpoint goes to a hidden temporary file in the target folder (``.<name>.<pid>.<random>.tmp``), is flushed
    and fsynced, renamed over ``<name>`` and the folder fsynced. Temporary files left by a killed run (whose process
    is gone) are deleted when the saver is created.

    Args:
        dirname: the folder of the checkpoints (created when missing).
        filename: a fixed file name for every checkpoint (e.g. ``model.pt``), or None for ignite's names.
        save_on_rank: the process that writes (distributed runs).
        kwargs: passed to ``torch.save``.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None, save_on_rank: int = 0, **kwargs) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank,
                         **kwargs)
        self.filename = filename
        self._retired: list[str] = []
        if idist.get_rank() == save_on_rank:
            for leftover in self.dirname.glob(f".*{TEMPORARY_SUFFIX}"):
                if not _writer_alive(leftover.name):
                    logger.info("removing %s, an unfinished checkpoint of an interrupted run", leftover)
                    leftover.unlink(missing_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        name = self.filename or filename
        self._write(checkpoint, self.dirname / name)
        for retired in self._retired:
            if retired != name:
                (self.dirname / retired).unlink(missing_ok=True)
        self._retired = []

    def remove(self, filename: str) -> None:
        """Marks a checkpoint for deletion after the next one is written (ignite retires it before saving)."""
        if idist.get_rank() == self.save_on_rank:
            self._retired.append(self.filename or filename)

    def _serialize(self, checkpoint: Mapping, stream) -> None:
        torch.save(checkpoint, stream, **self.kwargs)

    def _write(self, checkpoint: Mapping, path: Path) -> None:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX,
                                             dir=self.dirname)
        try:
            with os.fdopen(handle, "wb") as stream:
                self._serialize(checkpoint, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, os.stat(temporary).st_mode | stat.S_IRGRP | stat.S_IROTH)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        folder = os.open(self.dirname, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class CrashSafeCheckpointSaver(CheckpointSaver):
    """MONAI's CheckpointSaver writing through :class:`AtomicDiskSaver`, so a killed run never leaves a partial
    file, a retired checkpoint is deleted only after its successor is complete (``n_saved=2`` keeps the previous
    one), and a fixed-name file (``key_metric_filename="model.pt"``) is replaced in one step.

    The epoch (or iteration) checkpoints already in ``save_dir`` from an earlier run of the same command count towards
    ``n_saved`` (older ones beyond it go after the next save), so a resumed run keeps the same number of files. With
    ``save_key_metric``, ``state_dict`` / ``load_state_dict`` carry the best score so far, so that a resumed run
    replaces the best model only by a better one (put the saver in the trainer's checkpoint).

    Args:
        save_dir, save_dict, ...: as :class:`monai.handlers.CheckpointSaver`.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        fixed = {"_final_checkpoint": kwargs.get("final_filename"),
                 "_key_metric_checkpoint": kwargs.get("key_metric_filename"), "_interval_checkpoint": None}
        for attribute, filename in fixed.items():
            checkpoint = getattr(self, attribute)
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, filename)
        if self._interval_checkpoint is not None:
            name = next(iter(save_dict)) if len(save_dict) == 1 else "checkpoint"
            prefix = kwargs.get("file_prefix", "")
            unit = "epoch" if self.epoch_level else "iteration"
            pattern = f"{prefix}_{name}_{unit}=*.pt" if prefix else f"{name}_{unit}=*.pt"
            on_disk = [(number, os.path.basename(path)) for number, path in saved_checkpoints(save_dir, pattern)]
            keep = len(on_disk) if self._interval_checkpoint.n_saved is None else self._interval_checkpoint.n_saved
            for _, surplus in on_disk[keep:]:
                self._interval_checkpoint.save_handler.remove(surplus)
            self._interval_checkpoint.load_state_dict({"_saved": on_disk[:keep][::-1]})

    def state_dict(self) -> dict:
        """The best key-metric scores so far and their files (empty without ``save_key_metric``)."""
        if self._key_metric_checkpoint is None:
            return {}
        saved = self._key_metric_checkpoint.state_dict()["_saved"]
        return {"_saved": [(float(priority), filename) for priority, filename in saved]}

    def load_state_dict(self, state_dict: dict) -> None:
        if self._key_metric_checkpoint is not None and state_dict:
            self._key_metric_checkpoint.load_state_dict(state_dict)


class ResumeFromCheckpoint(CheckpointLoader):
    """Loads, when training starts, the newest checkpoint of ``checkpoint_dir`` that reads back whole (see
    :func:`checkpoint_problem`); a damaged newer one is reported with a warning naming the file and skipped. Without
    any checkpoint, training starts from the beginning.

    Args:
        checkpoint_dir: the folder of the epoch checkpoints.
        load_dict: the objects to restore, as :class:`monai.handlers.CheckpointLoader`.
        pattern: the checkpoints' file names (glob).
        map_location, name, strict, strict_shape: as :class:`monai.handlers.CheckpointLoader`.

    Raises:
        RuntimeError: when the folder holds checkpoints but none reads back whole (naming each and its problem):
            starting over would overwrite them.
    """

    def __init__(self, checkpoint_dir: str, load_dict: dict, pattern: str = "checkpoint_epoch=*.pt",
                 map_location=None, name: str | None = None, strict: bool = True, strict_shape: bool = True) -> None:
        super().__init__(load_path=checkpoint_dir, load_dict=load_dict, name=name, map_location=map_location,
                         strict=strict, strict_shape=strict_shape)
        self.checkpoint_dir, self.pattern = checkpoint_dir, pattern

    def __call__(self, engine: Engine) -> None:
        candidates = saved_checkpoints(self.checkpoint_dir, self.pattern)
        problems = []
        for _, path in candidates:
            problem = checkpoint_problem(path)
            if problem is None:
                self.load_path = path
                super().__call__(engine)
                return
            logger.warning("checkpoint %s is damaged (%s); resuming from an earlier checkpoint instead", path, problem)
            problems.append(f"{path}: {problem}")
        if problems:
            raise RuntimeError(
                f"no checkpoint in {self.checkpoint_dir} can be read: " + "; ".join(problems) + ". Move the folder "
                "away to train from the beginning, or restore a checkpoint from a backup."
            )
        self.logger.info(f"no checkpoint in {self.checkpoint_dir}: training starts at epoch 1")


class IterationSnapshots:
    """Writes the state of ``save_dict`` after each of the given training iterations (1-based, counted over the
    whole run) to ``save_dir/<name>_iteration=<n>.pt``, atomically (:class:`AtomicDiskSaver`); opt-in snapshots for
    looking at the embedding space at chosen points of training (``snapshot_iterations`` of the bundle).

    A resumed run writes the snapshots of the iterations it still runs; those written before stay.

    Args:
        save_dir: the folder of the snapshots (created when missing).
        save_dict: ``{name: object with state_dict()}``; one object is saved as its state dict, several as a dict
            of state dicts (the name of the file is ``checkpoint`` then).
        iterations: the iterations after which to write, positive integers.

    Raises:
        ValueError: for an empty or non-positive iteration list, or an empty ``save_dict``.
    """

    def __init__(self, save_dir: str, save_dict: dict, iterations) -> None:
        numbers = sorted({int(i) for i in iterations}) if iterations is not None else []
        if not numbers or numbers[0] < 1 or any(int(i) != i for i in iterations):
            raise ValueError(f"IterationSnapshots: iterations must be positive integers; got {iterations!r}")
        if not save_dict:
            raise ValueError("IterationSnapshots: save_dict is empty; give {name: object} to save")
        self.save_dir, self.save_dict, self.iterations = save_dir, dict(save_dict), set(numbers)
        self.name = next(iter(self.save_dict)) if len(self.save_dict) == 1 else "checkpoint"
        self._saver: AtomicDiskSaver | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda _, n: n in self.iterations), self)

    def __call__(self, engine: Engine) -> None:
        if self._saver is None:
            self._saver = AtomicDiskSaver(self.save_dir)
        states = {name: item.state_dict() for name, item in self.save_dict.items()}
        content = next(iter(states.values())) if len(states) == 1 else states
        filename = f"{self.name}_iteration={engine.state.iteration}.pt"
        self._saver(content, filename)
        logger.info("snapshot of iteration %d written to %s", engine.state.iteration,
                    os.path.join(self.save_dir, filename))
