"""Where the annotation loop keeps its files and finds its Label Studio server, from the config."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.config import AnnotationConfig, PipelineConfig

from .labelstudio_server import TOKEN_FILE, local_address


def annotation_dir(config: PipelineConfig) -> Path:
    """The tables and the report: ``<data_dir>/annotation``."""
    return config.paths.data_dir / "annotation"


def server_dir(config: PipelineConfig) -> Path:
    return config.annotation.server_dir or config.paths.data_dir / "labelstudio"


def media_root(config: PipelineConfig) -> Path:
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT. It holds nothing but :func:`blind_media_folder`."""
    return annotation_dir(config) / "media"


def blind_media_folder(config: PipelineConfig) -> Path:
    """The folder attached as both projects' local-files storage (a strict subfolder of the root):
    one link per clip, named by the clip's opaque id, to the real file."""
    return media_root(config) / "blind"


def extracted_clips_folder(config: PipelineConfig) -> Path:
    """Where the shards' clips are unpacked to be rated (outside the document root: never served)."""
    return annotation_dir(config) / "clips"


def blinding_file(config: PipelineConfig) -> Path:
    """The private map from opaque ids to samples, versions and annotators (:mod:`annotation.blinding`)."""
    return annotation_dir(config) / "private" / "blinding.json"


def export_folder(config: PipelineConfig) -> Path:
    """Label Studio's own JSON export of each project, next to the tidy tables."""
    return annotation_dir(config) / "labelstudio_export"


def server_url(cfg: AnnotationConfig) -> str:
    return (cfg.url or f"http://{local_address(cfg.host)}:{cfg.port}").rstrip("/")


def server_token(config: PipelineConfig) -> str:
    """The API token: the configured environment variable, else the server's 0600 token file."""
    token = os.environ.get(config.annotation.token_env, "").strip()
    if token:
        return token
    path = server_dir(config) / TOKEN_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    raise RuntimeError(
        f"no Label Studio token: set ${config.annotation.token_env} or start the local server "
        f"(python -m annotation server start), which writes {path}"
    )
