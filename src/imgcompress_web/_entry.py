"""The ``imgcompress`` console script's entry point: imports the CLI only when it runs.

Compression worker processes re-import their parent's main module (as multiprocessing
does for ``spawn`` and ``forkserver``), and for ``imgcompress serve`` that module is the
console script. Importing nothing heavy here keeps each worker process small.
"""

from __future__ import annotations


def main() -> None:
    """Run the ``imgcompress`` command line."""
    from .cli import main as cli

    cli()
