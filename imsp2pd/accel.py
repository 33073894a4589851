"""Compiled copies of the hot modules (Cython), used only while they match
their source.

The SIP, Diameter and IMS cores are plain Python and run as such.  For
speed, ``python -m imsp2pd.build_accel`` compiles the modules of
:data:`MODULES` with Cython (the same source, unannotated) into
``imsp2pd/_accel/<module>.<source hash><suffix>``, and :func:`install` (run
when the package is imported) puts a finder first on ``sys.meta_path`` that
loads such a copy when, and only when, the hash of the module's source as it
is now names one: a module edited since the build runs from its source until
the next build, so a stale copy can never shadow a change.  Setting
``IMSP2P_PURE=1`` runs everything from source.

``python -m imsp2pd.build_accel status`` tells which modules run compiled.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

#: the modules compiled: what a SIP request, a Diameter exchange, the
#: CSCFs' decisions and the store's worker run through, thousands of times a
#: second
MODULES: tuple[str, ...] = (
    "imsp2pd.sip.headers",
    "imsp2pd.sip.uri",
    "imsp2pd.sip.message",
    "imsp2pd.sip.parser",
    "imsp2pd.sip.transaction",
    "imsp2pd.sip.proxy",
    "imsp2pd.sip.transport",
    "imsp2pd.sip.digest",
    "imsp2pd.ims.ifc",
    "imsp2pd.ims.profile",
    "imsp2pd.ims.pcscf",
    "imsp2pd.ims.icscf",
    "imsp2pd.ims.scscf",
    "imsp2pd.ims.hss",
    "imsp2pd.diameter.avp",
    "imsp2pd.diameter.message",
    "imsp2pd.diameter.peer",
    "imsp2pd.diameter.node",
    "imsp2pd.diameter.protocol",
    "imsp2pd.diameter.cx",
    "imsp2pd.diameter.dictionary",
    "imsp2pd.store.sqlite",
    "imsp2pd.local_hops",
    "imsp2pd.metrics",
)

PACKAGE_ROOT = Path(__file__).resolve().parent
ACCEL_DIR = PACKAGE_ROOT / "_accel"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
PURE_ENV = "IMSP2P_PURE"


def source_of(module: str) -> Path:
    """The ``.py`` file of one of :data:`MODULES`."""
    parts = module.split(".")
    if parts[0] != "imsp2pd":
        raise ValueError(f"not an imsp2pd module: {module}")
    return PACKAGE_ROOT.joinpath(*parts[1:]).with_suffix(".py")


#: how a copy is compiled: part of its name, so that a copy compiled
#: otherwise is never taken for a current one
DIRECTIVES: dict[str, object] = {
    "language_level": 3,
    # Python's semantics, annotations included: with annotation typing,
    # Cython turns an IntEnum passed as ``int`` into a plain int (a Diameter
    # AVP code would lose its vendor)
    "annotation_typing": False,
}
FLAVOUR = repr(sorted(DIRECTIVES.items())).encode()


def source_hash(source: bytes) -> str:
    return hashlib.sha256(FLAVOUR + b"\0" + source).hexdigest()[:16]


def compiled_path(module: str, source: bytes, accel_dir: Path = ACCEL_DIR) -> Path:
    """Where the compiled copy of ``module`` built from ``source`` lives."""
    return accel_dir / f"{module}.{source_hash(source)}{SUFFIX}"


def current(module: str, accel_dir: Path = ACCEL_DIR) -> Path | None:
    """The compiled copy matching the module's source now, if built."""
    try:
        source = source_of(module).read_bytes()
    except OSError:
        return None
    path = compiled_path(module, source, accel_dir)
    return path if path.is_file() else None


class AccelFinder:
    """A meta path finder for :data:`MODULES`: their compiled copy when one
    matches the source, else nothing (the normal finders load the source)."""

    def __init__(self, modules: Sequence[str] = MODULES, accel_dir: Path = ACCEL_DIR) -> None:
        self.modules = frozenset(modules)
        self.accel_dir = accel_dir

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        compiled = current(fullname, self.accel_dir)
        if compiled is None:
            return None
        return importlib.util.spec_from_file_location(fullname, compiled)

    def invalidate_caches(self) -> None:
        pass


def install() -> bool:
    """Put the finder first on ``sys.meta_path`` (once); False when
    ``IMSP2P_PURE`` asks for the source only."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return False
    if not any(isinstance(f, AccelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AccelFinder())
    return True


def status() -> dict[str, bool]:
    """For each of :data:`MODULES`: whether it is running compiled now (when
    imported) or would (when not yet imported)."""
    out: dict[str, bool] = {}
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None:
            out[name] = not str(getattr(module, "__file__", "")).endswith(".py")
        else:
            out[name] = current(name) is not None and os.environ.get(PURE_ENV, "") in ("", "0")
    return out


def build(modules: Sequence[str] = MODULES, *, jobs: int = 0, quiet: bool = True) -> list[str]:
    """Compile the modules whose current source has no compiled copy yet;
    returns the names compiled.  Needs Cython and a C compiler."""
    from Cython.Build import cythonize  # a build-time tool (the accel extra)
    from setuptools import Distribution, Extension

    todo = [m for m in modules if current(m) is None]
    if not todo:
        return []
    jobs = jobs or os.cpu_count() or 1
    ACCEL_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imsp2pd-accel-") as tmp:
        # compile a copy of each source as hashed now, in its package (Cython
        # names a module by its package path), so the copy's name always
        # tells the source it was compiled from
        src = Path(tmp, "src")
        sources: dict[str, bytes] = {}
        for m in todo:
            sources[m] = source_of(m).read_bytes()
            parts = m.split(".")
            for i in range(1, len(parts)):
                init = src.joinpath(*parts[:i], "__init__.py")
                init.parent.mkdir(parents=True, exist_ok=True)
                init.touch()
            src.joinpath(*parts).with_suffix(".py").write_bytes(sources[m])
        cwd = os.getcwd()
        os.chdir(src)
        log = open(os.path.join(tmp, "build.log"), "w+b")
        saved = [os.dup(1), os.dup(2)] if quiet else []
        if quiet:  # the compilers' chatter, shown only when the build fails
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        try:
            exts = [Extension(m, [str(Path(*m.split(".")).with_suffix(".py"))]) for m in todo]
            exts = cythonize(
                exts,
                build_dir=os.path.join(tmp, "c"),
                nthreads=jobs,
                quiet=True,
                compiler_directives=DIRECTIVES,
            )
            dist = Distribution({"ext_modules": exts, "script_name": "accel"})
            dist.script_args = [
                "build_ext",
                "--build-lib",
                os.path.join(tmp, "lib"),
                "--build-temp",
                os.path.join(tmp, "obj"),
                "--parallel",
                str(jobs),
            ]
            if quiet:
                dist.script_args.insert(0, "--quiet")
            dist.parse_command_line()
            dist.run_commands()
        except BaseException:
            if quiet:
                _restore(saved)
                saved = []
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            _restore(saved)
            log.close()
            os.chdir(cwd)
        for m in todo:
            built = Path(tmp, "lib", *m.split(".")).with_suffix(SUFFIX)
            for old in ACCEL_DIR.glob(f"{m}.*{SUFFIX}"):
                old.unlink()
            final = compiled_path(m, sources[m])
            partial = final.with_name(f".{final.name}.{os.getpid()}")
            shutil.copyfile(built, partial)
            os.replace(partial, final)  # whole or absent for an importer
    return todo


def _restore(saved: list[int]) -> None:
    for fd, copy in zip((1, 2), saved, strict=False):
        sys.stdout.flush() if fd == 1 else sys.stderr.flush()
        os.dup2(copy, fd)
        os.close(copy)
