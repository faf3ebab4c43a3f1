"""Settings for the ``dfsd`` command from three places, in this order of precedence:

1. the command line (``--port 8001``);
2. the environment: ``DFS_`` and the option's name in capitals (``DFS_PORT=8001``, ``DFS_MANAGER``, ``DFS_DATA``);
3. a TOML file, named by ``--config PATH`` or ``$DFS_CONFIG``, with one table per command (``[manager]`` for
   ``manager`` and ``backup``, ``[storage]``, ``[cluster]``, and ``[client]`` for ``status``, ``rebalance``, ``scrub``
   and ``drain``), keys named like the options (``port = 8001``, ``node-timeout = 5`` or ``node_timeout = 5``).

Each option's default is replaced by what the file and then the environment say before the command line is parsed,
so argparse still checks and converts every value, whichever place it came from.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any

CONFIG_ENV = "DFS_CONFIG"
TABLES = {"status": "client", "rebalance": "client", "scrub": "client", "drain": "client", "backup": "manager"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def apply_defaults(parser: argparse.ArgumentParser, command: str, config: Path | None) -> None:
    """Set ``parser``'s defaults from the TOML file's table for ``command``, then from the environment."""
    table = _table(config, TABLES.get(command, command))
    for action in parser._actions:
        if action.dest in ("help", "config") or not action.option_strings:
            continue
        for source, raw in (("the config file", table.get(action.dest)), ("$" + env_name(action), _env(action))):
            if raw is not None:
                try:
                    action.default = _convert(action, raw)
                except (TypeError, ValueError) as err:
                    parser.error(f"{source}: {action.dest} = {raw!r}: {err}")


def env_name(action: argparse.Action) -> str:
    return "DFS_" + action.dest.upper()


def config_path(argv: list[str]) -> Path | None:
    """``--config PATH`` from the command line, else $DFS_CONFIG."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            return Path(argv[index + 1])
        if arg.startswith("--config="):
            return Path(arg.partition("=")[2])
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def _table(config: Path | None, name: str) -> dict[str, Any]:
    if config is None:
        return {}
    try:
        document = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SystemExit(f"dfsd: cannot read the config file {config}: {err}") from None
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise SystemExit(f"dfsd: [{name}] in {config} must be a table")
    return {key.replace("-", "_"): value for key, value in table.items()}


def _env(action: argparse.Action) -> str | None:
    return os.environ.get(env_name(action)) or None


def _convert(action: argparse.Action, raw: Any) -> Any:
    if action.nargs == 0:  # a flag: store_true / store_false
        if isinstance(raw, bool):
            value = raw
        elif str(raw).lower() in _TRUE | _FALSE:
            value = str(raw).lower() in _TRUE
        else:
            raise ValueError("expected true or false")
        return value  # the option's own value: DFS_AUTO_REBALANCE=false is what --no-auto-rebalance sets
    if action.type is not None and not isinstance(raw, bool):
        return action.type(raw)  # type: ignore[operator]
    return raw
