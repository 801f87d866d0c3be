"""``python -m annotation``: run the local Label Studio server that annotators use.

    python -m annotation server start    # detached; prints the URL and where the token is
    python -m annotation server status
    python -m annotation server stop

Paths, port and token variable come from the pipeline config (``annotation`` section,
``--config`` or $TALKINGHEAD_CONFIG). The server binds 127.0.0.1 only; its state (SQLite,
logs, ``api_token`` and ``admin_password``, both mode 0600) lives in the server folder.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from pipelines.config import load_config

from . import loop
from .labelstudio import (
    LabelStudioServer,
    load_or_create_token,
    pid_alive,
    private_secret,
    read_pidfile,
    stop_recorded_server,
    write_pidfile,
)

PASSWORD_FILE = "admin_password"


def server_start(config_path: str | None, timeout: float) -> int:
    config = load_config(config_path)
    folder = loop.server_dir(config)
    info = read_pidfile(folder)
    if info and pid_alive(int(info["pid"])):
        print(f"already running: {info['url']} (pid {info['pid']})")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    token = os.environ.get(config.annotation.token_env, "").strip() or load_or_create_token(folder)
    password = private_secret(folder / PASSWORD_FILE, lambda: secrets.token_urlsafe(16))
    media = loop.media_folder(config)
    media.mkdir(parents=True, exist_ok=True)
    server = LabelStudioServer(folder, port=config.annotation.port, password=password, token=token,
                               media_root=loop.media_root(config), start_timeout=timeout)
    print(f"starting Label Studio on {server.url} (state in {folder}; first start takes about a minute)")
    server.start()
    write_pidfile(server)
    print(f"running: {server.url} (pid {server.pid})")
    print(f"log in as {server.username}; password in {folder / PASSWORD_FILE}, API token in "
          f"{folder / 'api_token'} (or ${config.annotation.token_env})")
    return 0


def server_stop(config_path: str | None) -> int:
    folder = loop.server_dir(load_config(config_path))
    print("stopped" if stop_recorded_server(folder) else f"no server recorded in {folder}")
    return 0


def server_status(config_path: str | None) -> int:
    folder = loop.server_dir(load_config(config_path))
    info = read_pidfile(folder)
    if info and pid_alive(int(info["pid"])):
        print(f"running: {info['url']} (pid {info['pid']})")
        return 0
    print(f"not running (state folder {folder})")
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annotation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="pipeline YAML config (default: $TALKINGHEAD_CONFIG or built-in)")
    sub = parser.add_subparsers(dest="group", required=True)
    server = sub.add_parser("server", help="the local Label Studio server")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the server to answer")
    args = parser.parse_args(argv)
    if args.action == "start":
        return server_start(args.config, args.timeout)
    if args.action == "stop":
        return server_stop(args.config)
    return server_status(args.config)


if __name__ == "__main__":
    sys.exit(main())
