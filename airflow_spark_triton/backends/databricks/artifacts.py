"""What the Databricks backend ships to the workspace: the package wheel, the job file, the init script.

The three travel as one set under ``<artifact_root>/artifacts/<digest>/`` where the digest covers all
of them, so a cluster's installed wheel and the job file a run executes always come from the same
code, an unchanged version is uploaded once, and a new version never overwrites a file that a
running cluster still reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import airflow_spark_triton
from airflow_spark_triton.errors import BackendError
from spark_jobs.contract import JOB_SCRIPT
from spark_jobs.file_lock import file_lock

PACKAGES = ("airflow_spark_triton", "spark_jobs")
INIT_SCRIPT = Path(airflow_spark_triton.__file__).parent / "init_scripts" / "databricks_init.sh"
WHEEL_CACHE = Path(tempfile.gettempdir()) / "airflow_spark_triton_wheels"


class ArtifactError(BackendError):
    """No wheel can be built or found; the message says what to configure."""


@dataclass(frozen=True)
class ArtifactSet:
    digest: str
    wheel: Path
    job_file: Path = JOB_SCRIPT
    init_script: Path = INIT_SCRIPT

    def remote_dir(self, root: str) -> str:
        return f"{root.rstrip('/')}/artifacts/{self.digest}"

    def remote_paths(self, root: str) -> dict[str, str]:
        """Remote path per role; the wheel keeps its own file name because pip parses it."""
        base = self.remote_dir(root)
        return {
            "wheel": f"{base}/{self.wheel.name}",
            "job_file": f"{base}/{self.job_file.name}",
            "init_script": f"{base}/{self.init_script.name}",
        }

    def files(self, root: str) -> list[tuple[Path, str]]:
        remote = self.remote_paths(root)
        return [
            (self.wheel, remote["wheel"]),
            (self.job_file, remote["job_file"]),
            (self.init_script, remote["init_script"]),
        ]


def _sha256(*parts: bytes) -> hashlib._Hash:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest


def source_root() -> Path | None:
    """The source checkout this package runs from, if any (an installed wheel has none)."""
    root = Path(airflow_spark_triton.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "airflow-spark-triton"' in pyproject.read_text():
        return root
    return None


def _source_files(root: Path) -> list[Path]:
    files = [root / "pyproject.toml"]
    for package in PACKAGES:
        files += sorted(
            p
            for p in (root / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return files


def source_digest(root: Path) -> str:
    """Wheels are not byte-reproducible (zip timestamps), so the cache key is the source, not the wheel."""
    digest = hashlib.sha256()
    for path in _source_files(root):
        digest.update(_sha256(str(path.relative_to(root)).encode(), path.read_bytes()).digest())
    return digest.hexdigest()


def build_wheel(root: Path, digest: str) -> Path:
    """Build from a copy of the sources, so the checkout gets no build/ or egg-info from us."""
    out = WHEEL_CACHE / digest
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".lock"):
        built = sorted(out.glob("*.whl"))
        if built:
            return built[0]
        with tempfile.TemporaryDirectory(prefix="spark-triton-wheel-") as tmp:
            src = Path(tmp) / "src"
            for path in _source_files(root):
                target = src / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            with contextlib.suppress(FileNotFoundError):
                shutil.copy2(root / "README.md", src / "README.md")
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
            ]
            result = subprocess.run([*cmd, "-q", "-w", tmp, str(src)], capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if result.returncode != 0 or not wheels:
                raise ArtifactError(
                    f"building the airflow-spark-triton wheel from {root} failed "
                    f"(exit {result.returncode}): {result.stderr.strip()[-2000:]}"
                )
            return Path(shutil.copy2(wheels[0], out / wheels[0].name))


def artifact_set(wheel: str | None = None) -> ArtifactSet:
    """The set to ship: a prebuilt ``wheel`` if given, else one built from the source checkout."""
    if wheel:
        path = Path(wheel)
        if not path.is_file() or path.suffix != ".whl":
            raise ArtifactError(
                f"wheel {wheel!r} (hook argument or connection extra 'wheel') is not a .whl file"
            )
    else:
        root = source_root()
        if root is None:
            raise ArtifactError(
                "airflow-spark-triton is installed without its sources, so no wheel can be built: set the "
                "connection extra 'wheel' (or the hook argument) to a local airflow_spark_triton-*.whl"
            )
        # The sources include the job file and the init script; every worker gets the same digest.
        digest = source_digest(root)[:16]
        return ArtifactSet(digest=digest, wheel=build_wheel(root, digest))
    digest = _sha256(path.name.encode(), path.read_bytes(), JOB_SCRIPT.read_bytes(), INIT_SCRIPT.read_bytes())
    return ArtifactSet(digest=digest.hexdigest()[:16], wheel=path)
