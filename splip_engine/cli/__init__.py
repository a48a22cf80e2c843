"""The `splip-engine` command: a thin click layer over the library.

Each `cmd_<name>.py` module in this package defines one click command named `command`; the group
discovers them, so adding a command is adding a file. Shared options live in `options.py`.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from splip_engine._version import __version__
from splip_engine.errors import SpLIPError


class _EngineGroup(click.Group):
    """Discovers `cmd_*` modules and turns SpLIPError into one line on stderr and exit code 2."""

    def _commands(self) -> dict[str, click.Command]:
        found = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name.startswith("cmd_"):
                cmd = importlib.import_module(f"{__name__}.{info.name}").command
                found[cmd.name] = cmd
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._commands())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._commands().get(name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SpLIPError as e:
            click.secho(f"error: {e}", err=True, fg="red")
            sys.exit(2)


@click.group(cls=_EngineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="splip-engine")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """SpLIP engine: zero-shot sketch-based image retrieval.

    \b
    Start here:
      splip-engine demo            # the whole pipeline on a tiny model, offline
      splip-engine info            # versions, devices, optional backends
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
