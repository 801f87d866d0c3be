"""Stage library: media IO, faces, tracking, crops, shards, records, config, models.

Pure Python with no orchestrator import, so every stage can be called alone, tested
alone, and run under another engine (Dagster in assets/, a CLI, Ray) unchanged.
"""

__version__ = "0.1.0"
