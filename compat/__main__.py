"""``python -m compat doctor [--json] [--model-dir DIR] [--scan PATH] [--only NAME,...]``,
``python -m compat checksums DIR``, ``python -m compat shims``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _doctor(args: argparse.Namespace) -> int:
    from compat.doctor import DoctorOptions, run

    options = DoctorOptions(model_dir=args.model_dir, scan_paths=list(args.scan))
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        report = run(options, only=only)
    except ValueError as exc:
        print(f"compat doctor: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.to_text())
    return 0 if report.ok else 1


def _checksums(args: argparse.Namespace) -> int:
    from compat.checks.model import MANIFEST, verify_manifest, write_manifest

    if not args.dir.is_dir():
        print(f"compat checksums: {args.dir} is not a directory", file=sys.stderr)
        return 2
    if args.verify:
        problems = verify_manifest(args.dir)
        for p in problems:
            print(p)
        print(f"{MANIFEST}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    print(f"wrote {write_manifest(args.dir)}")
    return 0


def _shims(args: argparse.Namespace) -> int:
    from compat.shims import available

    for name, fixes in available().items():
        print(f"{name:26} fixes: {fixes}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    doc = sub.add_parser("doctor", help="check the environment; exit 1 on any failure")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.add_argument("--model-dir", type=Path, default=None, help="model directory (default: $TTS_MODEL_DIR)")
    doc.add_argument(
        "--scan", type=Path, action="append", default=[], help="extra code to scan for np.float etc."
    )
    doc.add_argument("--only", default="", help="comma-separated check names")
    doc.set_defaults(fn=_doctor)
    chk = sub.add_parser("checksums", help="write (or --verify) DIR/checksums.sha256")
    chk.add_argument("dir", type=Path)
    chk.add_argument("--verify", action="store_true")
    chk.set_defaults(fn=_checksums)
    sub.add_parser("shims", help="list the opt-in shims").set_defaults(fn=_shims)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
