"""The annotation commands, on their own and as a group of another command line."""

from __future__ import annotations

import argparse

import pytest

from annotation.cli import main, register, server_start, server_status, server_stop


def parent_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead")
    parser.add_argument("--config")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_register_adds_the_server_commands():
    parser = parent_parser()
    args = parser.parse_args(["--config", "c.yaml", "annotation", "server", "start", "--timeout", "5"])
    assert args.func is server_start and args.timeout == 5.0 and args.config == "c.yaml"
    assert parser.parse_args(["annotation", "server", "stop"]).func is server_stop
    assert parser.parse_args(["annotation", "server", "status"]).func is server_status
    with pytest.raises(SystemExit):
        parser.parse_args(["annotation", "server", "restart"])


def test_status_without_a_server(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"paths:\n  data_dir: {tmp_path}\n")
    assert main(["--config", str(config), "server", "status"]) == 3
    assert f"not running (state folder {tmp_path / 'labelstudio'})" in capsys.readouterr().out
