"""The one run-folder opener of ``run`` (= ``python pipeline.py``) and ``train``: the same checks, lock and
``config.json`` in the same order, so the same input is refused at the same point by both.

Order: the data is loaded (by the caller), then the training config is checked against it and the bundle folder is
checked (``stages.check_fit``, ``stages.check_bundle_dir``: nothing is written before both pass, so a refused run
leaves no folder), then the folder is created and locked (``core.files.hold_lock``: one process per run folder,
exit 2 naming the holder), ``config.json`` is written when absent and ``pipeline.log`` opened. After training
accepted the folder (a folder holding another config's checkpoints is refused by training and keeps its old
``config.json``), :meth:`RunFolder.training_accepted` records the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_encoder import stages
from edge_encoder.commands.logs import log_to_file
from edge_encoder.core.files import atomic_write_json, hold_lock
from edge_encoder.imagedata import RunData
from edge_encoder.settings import Settings
from edge_encoder.train.distributed import env_rank


@dataclass(frozen=True)
class RunFolder:
    """An open run folder: ``path`` (``RUNS_DIR/NAME``), this process's ``rank`` (only rank 0 writes)."""

    path: Path
    settings: Settings
    rank: int

    def training_accepted(self) -> None:
        """Record the run's config (``config.json``, what ``export`` reads) once training accepted the folder."""
        if self.rank == 0:
            atomic_write_json(self.path / "config.json", self.settings.to_dict())


def open_run_folder(settings: Settings, data: RunData, runs_dir: Path) -> RunFolder:
    """Check, create and lock ``runs_dir/settings.name`` for a run that trains on ``data``.

    A ``deploy/`` the export could not replace (a user's folder) is refused before training, by ``train`` too
    (its ``export`` would refuse it later). Under ``torchrun`` only rank 0 creates, locks and writes: its lock guards the folder for every rank (ranks > 0
    could not wait on it).
    """
    path = Path(runs_dir) / settings.name
    stages.check_fit(settings, data)
    stages.check_bundle_dir(path / "deploy")
    folder = RunFolder(path, settings, env_rank())
    if folder.rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        hold_lock(path)  # held until this process ends (a killed one blocks nothing)
        if not (path / "config.json").exists():  # rewritten by training_accepted()
            atomic_write_json(path / "config.json", settings.to_dict())
        log_to_file(path / "pipeline.log")
    return folder
