"""Where step outputs go between processes: Dagster's pickles, written atomically.

Dagster's built-in ``fs_io_manager`` writes each asset's pickle in place; a step killed
mid-write, or two runs of one partition, could leave a torn pickle that a downstream step
then reads. This one writes under a temporary name and renames (pipelines/atomic.py), in
the same place (``<DAGSTER_HOME>/storage`` unless ``base_dir`` is set).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import dagster as dg
from pydantic import Field
from upath import UPath

from pipelines.atomic import atomic_path


class AtomicPickleIOManager(dg.UPathIOManager):
    extension = ""

    def dump_to_path(self, context: dg.OutputContext, obj: object, path: UPath) -> None:
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> object:
        return pickle.loads(Path(path).read_bytes())


class AtomicFilesystemIOManager(dg.ConfigurableIOManagerFactory):
    """Step outputs as pickles on a shared file system, each published by an atomic rename."""

    base_dir: str | None = Field(default=None, description="Folder for the pickles; default <DAGSTER_HOME>/storage.")

    def create_io_manager(self, context: dg.InitResourceContext) -> AtomicPickleIOManager:
        base = self.base_dir or context.instance.storage_directory()
        return AtomicPickleIOManager(base_path=UPath(base))
