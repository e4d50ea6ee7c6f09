"""The verifier stands alone: it imports only the stdlib, cryptography and itself
(numpy only in the modules behind its [entropy] extra), and `pip install ./verifier`
into an empty venv brings cryptography and nothing else."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.beacon_proc import ROOT

PACKAGE = ROOT / "verifier" / "beacon_verifier"
ALLOWED_THIRD_PARTY = {"cryptography"}
# boto3: only inside S3Source ([s3]); pyblst: drand BLS ([drand]); urllib3: web.py ([http])
OPTIONAL = {"boto3", "botocore", "pyblst", "urllib3"}
# numpy only where `beacon-verify entropy` re-runs the estimators ([entropy] extra)
NUMPY_MODULES = {"estimators.py", "predictors.py", "substrings.py", "health.py", "audit.py"}
FORBIDDEN = {"beacon", "qiskit", "qiskit_aer", "qiskit_ibm_runtime", "jinja2"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_import_scan() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 5
    for path in files:
        for name in _imports(path):
            assert name not in FORBIDDEN, f"{path.name} imports {name}"
            if name == "numpy":
                assert path.name in NUMPY_MODULES, f"{path.name} imports numpy"
                continue
            allowed = (
                name in sys.stdlib_module_names
                or name == "beacon_verifier"
                or name in ALLOWED_THIRD_PARTY
                or name in OPTIONAL
            )
            assert allowed, f"{path.name} imports {name}"


def _clean_env() -> dict[str, str]:
    """The environment without anything that would show the repository to the venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.integration
def test_pip_install_into_empty_venv(tmp_path: Path) -> None:
    env = _clean_env()
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [py, "-m", "pip", "install", "--quiet", str(ROOT / "verifier")],
        check=True,
        capture_output=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    frozen = subprocess.run(
        [py, "-m", "pip", "list", "--format=freeze", "--exclude", "pip", "--exclude", "setuptools"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout
    installed = {line.split("==")[0].lower() for line in frozen.split()}
    # cryptography and its own dependencies, nothing of ours but the verifier
    assert installed <= {
        "beacon-verifier",
        "cryptography",
        "cffi",
        "pycparser",
        "typing-extensions",
    }
    assert {"beacon-verifier", "cryptography"} <= installed
    helped = subprocess.run(
        [env_dir / "bin" / "beacon-verify", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert helped.returncode == 0 and "pulse" in helped.stdout
    # An http(s) site needs the [http] extra: one line that names it.
    no_extra = subprocess.run(
        [env_dir / "bin" / "beacon-verify", "chain", "http://127.0.0.1:9/"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert no_extra.returncode != 0 and "beacon-verifier[http]" in no_extra.stderr
    assert len(no_extra.stderr.splitlines()) == 1, no_extra.stderr
    # And it verifies real NIST pulses there, without the beacon installed.
    vectors = ROOT / "tests" / "vectors" / "nist"
    (cert,) = vectors.glob("*.pem")
    checked = subprocess.run(
        [
            env_dir / "bin" / "beacon-verify",
            "pulse",
            vectors / "nist_c1_p54610.json",
            "--cert",
            cert,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Without the [entropy] extra, the one command that needs numpy says so in one line.
    entropy = subprocess.run(
        [env_dir / "bin" / "beacon-verify", "entropy", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert entropy.returncode == 2 and "beacon-verifier[entropy]" in entropy.stdout
    assert "Traceback" not in entropy.stdout + entropy.stderr
    no_beacon = subprocess.run(
        [py, "-c", "import beacon"], capture_output=True, check=False, env=env, cwd=tmp_path
    )
    assert no_beacon.returncode != 0


def test_the_http_stack_is_imported_only_for_an_http_source(tmp_path: Path) -> None:
    # Every start of beacon-verify pays for what it imports; most read a directory.
    probe = (
        "import sys\n"
        "from beacon_verifier import cli, fetch\n"
        "heavy = ('urllib3', 'http.client', 'ssl')\n"
        "print(*[m in sys.modules for m in heavy])\n"
        "fetch.open_source(sys.argv[1])\n"
        "print(*[m in sys.modules for m in heavy])\n"
        "fetch.open_source('http://127.0.0.1:9/')\n"
        "print(*[m in sys.modules for m in heavy])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "verifier")])}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.splitlines()
    assert out == ["False False False", "False False False", "True True True"]
