"""Print the runtime subset of a pip-compile lock: what ``-r requirements.txt`` pulls in, transitively.

The image installs this subset of the CI lock (same pins, same hashes) instead of installing the whole lock
and uninstalling the test/lint tools, which left the tools' own dependencies behind (and broke ``pip check``:
hypothesis-graphql without hypothesis). The closure comes from pip-compile's ``# via`` annotations.

Standard library only: it runs in the Dockerfile's builder stage before anything is installed.

    python runtime_lock.py requirements.lock [--root -r requirements.txt] > runtime.lock
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = "-r requirements.txt"
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?(-r \S+|[A-Za-z0-9_.-]+)\s*$", re.M)


def _name(block: str) -> str:
    return re.split(r"[=<>!~ \\]", block, maxsplit=1)[0].strip().lower().replace("_", "-")


def parse_blocks(lock: str) -> dict[str, tuple[str, set[str]]]:
    """package -> (its requirement block, the packages/files that pulled it in)."""
    body = lock.split("\n\n# The following packages are considered to be unsafe", 1)
    text = "\n".join(body[0:1] + ([body[1].split("\n", 1)[1]] if len(body) > 1 else []))
    out: dict[str, tuple[str, set[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if not block.strip() or block.lstrip().startswith("#"):
            continue
        via = {v.lower().replace("_", "-") for v in _VIA.findall(block) if v != "via"}
        out[_name(block)] = (block.rstrip() + "\n", via)
    return out


def runtime_closure(blocks: dict[str, tuple[str, set[str]]], root: str = ROOT) -> list[str]:
    """Names reachable from ``root`` through the ``# via`` edges, in lock order."""
    keep = {name for name, (_, via) in blocks.items() if root in via}
    if not keep:
        raise ValueError(f"no package in the lock is annotated 'via {root}' (not a pip-compile lock?)")
    grew = True
    while grew:
        more = {name for name, (_, via) in blocks.items() if via & keep} - keep
        keep |= more
        grew = bool(more)
    return [name for name in blocks if name in keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--root", default=ROOT, help=f"annotation of the top-level file (default {ROOT!r})")
    args = parser.parse_args(argv)
    blocks = parse_blocks(args.lock.read_text())
    names = runtime_closure(blocks, args.root)
    sys.stdout.write(f"# Runtime subset of {args.lock.name} ({len(names)} of {len(blocks)} packages)\n")
    sys.stdout.write("".join(blocks[name][0] for name in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
