"""``python -m imsp2pd.build_accel [status|build|clean]``: the compiled
copies of the hot modules (see :mod:`imsp2pd.accel`)."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence

from imsp2pd import accel


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m imsp2pd.build_accel", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("command", nargs="?", choices=("status", "build", "clean"), default="status")
    ap.add_argument("--jobs", type=int, default=0, help="compilers in parallel (default: cores)")
    ap.add_argument("--verbose", action="store_true", help="show the compilers' output")
    args = ap.parse_args(argv)
    if args.command == "build":
        done = accel.build(jobs=args.jobs, quiet=not args.verbose)
        print(f"accel: compiled {len(done)} module(s), {len(accel.MODULES) - len(done)} up to date")
    elif args.command == "clean":
        shutil.rmtree(accel.ACCEL_DIR, ignore_errors=True)
        print("accel: removed the compiled modules")
    else:
        for name in accel.MODULES:
            print(f"{'compiled' if accel.current(name) else 'source  '}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
