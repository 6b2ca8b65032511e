"""Build hook: generate the gRPC / protobuf stubs of protos/ into stellar_api/_generated.

Everything else about the package lives in pyproject.toml. The stubs are not
committed: they are made by the grpcio-tools pinned in [build-system] (the same
version as the grpcio runtime), so generated code and protobuf runtime always
match. The hook runs for wheels and for editable installs (`uv sync`), where
setuptools still calls build_py (in editable mode it copies nothing, so the
files are written into the source tree, which is what the editable finder maps).

By hand: `python setup.py build_py` (needs grpcio-tools).
"""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = "stellar_api._generated"
OUT_DIR = ROOT / "stellar_api" / "_generated"

# Proto packages registered in a private descriptor pool instead of the global
# one: `inference` is also defined by tritonclient and KServe's own stubs, and two
# definitions of `inference.ModelInferRequest` in one pool refuse to load, so a
# process could not import both this server's stubs and tritonclient.
PRIVATE_POOL_PACKAGES = {"inference"}

# `from stellar.v1 import classifier_pb2 as ...` -> `from . import classifier_pb2 as ...`
_ABSOLUTE_IMPORT = re.compile(r"^from ((?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*) import (\w+_pb2)", re.M)


def _proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _relative_import(module_package: str, target_package: str) -> str:
    """The relative form of `target_package` seen from a module in `module_package`."""
    here = module_package.split(".") if module_package else []
    there = target_package.split(".") if target_package else []
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return "." * (len(here) - common + 1) + ".".join(there[common:])


def generate_stubs() -> list[str]:
    """Run protoc (grpc_tools) over protos/; return the generated package names."""
    from grpc_tools import protoc  # build-time dependency
    import importlib.resources

    protos = _proto_files()
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))

    packages = {OUT_PACKAGE}
    for directory in [OUT_DIR, *[p for p in OUT_DIR.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("# generated from protos/ at build time; do not edit\n")
        rel = directory.relative_to(OUT_DIR)
        packages.add(".".join([OUT_PACKAGE, *rel.parts]) if rel.parts else OUT_PACKAGE)

    # protoc writes imports relative to the proto root (`from stellar.v1 import
    # classifier_pb2`); inside our package they must be relative.
    for module in OUT_DIR.rglob("*_pb2*.py"):
        package = ".".join(module.parent.relative_to(OUT_DIR).parts)
        text = module.read_text()

        def fix(match: re.Match) -> str:
            target = match.group(1)
            if not (OUT_DIR.joinpath(*target.split("."))).is_dir():
                return match.group(0)  # e.g. google.protobuf: a real top-level package
            return f"from {_relative_import(package, target)} import {match.group(2)}"

        new = _ABSOLUTE_IMPORT.sub(fix, text)
        new = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", new, flags=re.M)
        if module.parent.name in PRIVATE_POOL_PACKAGES:
            new = new.replace("_descriptor_pool.Default()", "_descriptor_pool.DescriptorPool()")
        if new != text:
            module.write_text(new)
    return sorted(packages)


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        packages = generate_stubs()
        # Packages were discovered before the stubs existed (a clean checkout):
        # add them so wheels carry them too.
        if self.packages is not None:
            for name in packages:
                if name not in self.packages:
                    self.packages.append(name)
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
