"""What `pip install .` (and so the Docker image the Helm chart runs) carries: every file the
packages need at run time, and the Dockerfile's system packages and sources."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tracked(*dirs: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *dirs], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return out.split()


def test_every_run_time_data_file_is_package_data():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = meta["tool"]["setuptools"]
    packages = [p.rstrip("*") for p in setuptools["packages"]["find"]["include"]]
    data = setuptools["package-data"]
    missing = []
    for path in _tracked(*packages):
        if path.endswith((".py", ".md")):
            continue
        top, rest = path.split("/", 1)
        if not any(fnmatch.fnmatch(rest, pattern) for pattern in data.get(top, [])):
            missing.append(path)
    assert not missing, f"not installed by pip (add to [tool.setuptools.package-data]): {missing}"


def test_dockerfile_has_the_run_time_system_packages_and_every_package():
    docker = (REPO / "Dockerfile").read_text()
    script = (REPO / "scripts" / "install_system_deps.sh").read_text()
    # the broker (Java, Maven), the venv and the Go fetch are the build machine's, not the image's
    build_only = {"openjdk-17-jre-headless", "maven", "python3-venv", "curl", "ca-certificates"}
    wanted = set(re.findall(r"need\+=\(([\w.+-]+)\)", script)) - build_only
    assert wanted and wanted <= set(docker.split()), wanted - set(docker.split())
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    for package in meta["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"COPY {package.rstrip('*')} ./{package.rstrip('*')}" in docker, package
    assert "'.[stream,media]'" in docker and 'ENTRYPOINT ["sync-scorer"]' in docker
    assert re.search(r"^USER \d+", docker, re.MULTILINE), "the image must not run as root"
