"""``terramind-openeo`` command line: one subcommand per job, each owned by the layer that does the work.

Subcommands are listed here explicitly and imported only when used, so ``terramind-openeo serve`` does
not pay for torch start-up twice and a broken optional layer never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("terramind_openeo.model.cli", "run TerraMind on GeoTIFF tiles and print/save the embeddings"),
    "run": ("terramind_openeo.processes.cli", "run an openEO process graph over a large area, tiled and resumable"),
    "serve": ("terramind_openeo.backend.cli", "start the openEO back-end (API 1.2)"),
    "weights": ("terramind_openeo.model.weights_cli", "download the official checkpoints once (for machines "
                "without internet) or list what is cached"),
}
EXTRAS = {"run": "processes", "serve": "serve"}
"""The install extra each command needs beyond the core (pyproject.toml)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="terramind-openeo",
        description="TerraMind inference as openEO processes, UDFs and large-area map production.",
        epilog="Run 'terramind-openeo COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("command", nargs="?", choices=sorted(COMMANDS), help="; ".join(
        f"{name}: {text}" for name, (_, text) in sorted(COMMANDS.items())))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.version:
        from terramind_openeo import __version__

        print(__version__)
        return 0
    if ns.command is None:
        parser.print_help()
        return 2
    try:
        module = importlib.import_module(COMMANDS[ns.command][0])
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(ns.command)
        if extra is None or (exc.name or "").startswith("terramind_openeo"):
            raise
        print(f"terramind-openeo {ns.command} needs the [{extra}] extra ({exc.name} is not installed): "
              f"pip install 'terramind-openeo[{extra}]'", file=sys.stderr)
        return 2
    return int(module.main(ns.args) or 0)


if __name__ == "__main__":
    sys.exit(main())
