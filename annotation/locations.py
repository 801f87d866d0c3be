"""Where the annotation loop keeps its files and finds its Label Studio server, from the config."""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.config import AnnotationConfig, PipelineConfig

from .labelstudio_server import TOKEN_FILE


def annotation_dir(config: PipelineConfig) -> Path:
    """The tables and the report: ``<data_dir>/annotation``."""
    return config.paths.data_dir / "annotation"


def server_dir(config: PipelineConfig) -> Path:
    return config.annotation.server_dir or config.paths.data_dir / "labelstudio"


def media_root(config: PipelineConfig) -> Path:
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT: the parent of the folder its storage serves."""
    return media_folder(config).parent


def media_folder(config: PipelineConfig) -> Path:
    """The folder attached as the project's local-files storage (a strict subfolder of the root)."""
    if config.annotation.versions_dir is not None:
        return config.annotation.versions_dir
    return annotation_dir(config) / "media" / "clips"


def server_url(cfg: AnnotationConfig) -> str:
    return (cfg.url or f"http://127.0.0.1:{cfg.port}").rstrip("/")


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
