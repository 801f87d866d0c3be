"""The ``annotation`` commands: run the local Label Studio server that annotators use.

    python -m annotation server start    # detached; prints the URL and where the token is
    python -m annotation server status
    python -m annotation server stop

:func:`register` adds the same commands as an ``annotation`` group to another command line
(``talkinghead annotation server start``); the parent parser provides ``--config``.

Paths, bind address, port, public address and token variable come from the pipeline config
(``annotation`` section, ``--config`` or $TALKINGHEAD_CONFIG). The server binds 127.0.0.1 unless
``annotation.host`` says otherwise (README: remote annotators through a reverse proxy); its state
(SQLite, logs, ``api_token`` and ``admin_password``, both mode 0600) lives in the server folder.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from pipelines.config import load_config

from .labelstudio_server import (
    LabelStudioServer,
    load_or_create_token,
    pid_alive,
    private_secret,
    read_pidfile,
    stop_recorded_server,
    write_pidfile,
)
from .locations import blind_media_folder, media_root, server_dir

PASSWORD_FILE = "admin_password"


def server_start(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    folder = server_dir(config)
    info = read_pidfile(folder)
    if info and pid_alive(int(info["pid"])):
        print(f"already running: {info['url']} (pid {info['pid']})")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    token = os.environ.get(config.annotation.token_env, "").strip() or load_or_create_token(folder)
    password = private_secret(folder / PASSWORD_FILE, lambda: secrets.token_urlsafe(16))
    blind_media_folder(config).mkdir(parents=True, exist_ok=True)
    server = LabelStudioServer(folder, port=config.annotation.port, password=password, token=token,
                               media_root=media_root(config), start_timeout=args.timeout,
                               host=config.annotation.host, public_url=config.annotation.public_url)
    print(f"starting Label Studio on {server.url} (state in {folder}; first start takes about a minute)")
    server.start()
    write_pidfile(server)
    print(f"running: {server.url} (pid {server.pid}, bound to {server.host})"
          + (f"; annotators open {server.public_url}" if server.public_url else ""))
    print(f"log in as {server.username}; password in {folder / PASSWORD_FILE}, API token in "
          f"{folder / 'api_token'} (or ${config.annotation.token_env})")
    return 0


def server_stop(args: argparse.Namespace) -> int:
    folder = server_dir(load_config(args.config))
    print("stopped" if stop_recorded_server(folder) else f"no server recorded in {folder}")
    return 0


def server_status(args: argparse.Namespace) -> int:
    folder = server_dir(load_config(args.config))
    info = read_pidfile(folder)
    if info and pid_alive(int(info["pid"])):
        print(f"running: {info['url']} (pid {info['pid']})")
        return 0
    print(f"not running (state folder {folder})")
    return 3


def add_commands(parser: argparse.ArgumentParser) -> None:
    """The ``server start|stop|status`` commands under ``parser``; each sets ``func(args) -> int``."""
    groups = parser.add_subparsers(dest="annotation_group", required=True)
    server = groups.add_parser("server", help="the local Label Studio server")
    actions = server.add_subparsers(dest="server_action", required=True)
    start = actions.add_parser("start", help="start it detached and record its pid")
    start.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the server to answer")
    start.set_defaults(func=server_start)
    actions.add_parser("stop", help="stop the recorded server").set_defaults(func=server_stop)
    actions.add_parser("status", help="say whether it runs (exit 3 when not)").set_defaults(func=server_status)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``annotation`` command group to another command line's ``subparsers``."""
    add_commands(subparsers.add_parser("annotation", help="human ratings: the local Label Studio server"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annotation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="pipeline YAML config (default: $TALKINGHEAD_CONFIG or built-in)")
    add_commands(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
