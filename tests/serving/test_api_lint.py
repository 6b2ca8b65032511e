"""`buf lint` (STANDARD and COMMENTS rules, buf.yaml) passes on protos/stellar, and the API
package stands alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF_PREFIX = ROOT / ".tools" / "node"  # git-ignored; `make buf` installs it there
BUF = BUF_PREFIX / "node_modules" / ".bin" / "buf"
BUF_PACKAGE = "@bufbuild/buf@1.75.0"  # keep in step with the Makefile


@pytest.fixture(scope="module")
def buf() -> Path:
    if not BUF.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"buf is not installed ({BUF}) and npm is missing: run `make buf` on a machine with npm")
        subprocess.run([npm, "install", "--prefix", str(BUF_PREFIX), "--no-save", "--no-audit", "--no-fund",
                        BUF_PACKAGE], check=True, capture_output=True, timeout=300)
    return BUF


def _lint(buf: Path, where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(buf), "lint"], cwd=where, capture_output=True, text=True, timeout=120)


def test_buf_lint_passes_on_the_stellar_protos(buf):
    done = _lint(buf, ROOT)
    assert done.returncode == 0, f"buf lint findings:\n{done.stdout}{done.stderr}"


def test_buf_lint_reports_what_the_rules_forbid(buf, tmp_path):
    # The same configuration over a copy with a service named without `Service` and an
    # uncommented field: buf must report both (so the check above can fail).
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    proto = tmp_path / "protos" / "stellar" / "v1" / "classifier.proto"
    text = proto.read_text().replace("service ClassifierService {", "service Classifier {")
    text = text.replace("message ReloadModelRequest {}", "message ReloadModelRequest {\n  string why = 1;\n}")
    proto.write_text(text)
    done = _lint(buf, tmp_path)
    assert done.returncode != 0
    assert 'Service name "Classifier" should be suffixed with "Service"' in done.stdout
    assert 'Field "why" should have a non-empty comment' in done.stdout


def test_the_api_package_imports_nothing_of_the_server():
    # The code location imports stellar_api; it must not pull in stellar_serving.
    code = ("import sys, stellar_api.client, stellar_api.status_details\n"
            "print(sorted(m for m in sys.modules if m.startswith('stellar_serving')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
