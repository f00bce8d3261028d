"""Pinned installs (issue 23): constraints/cpu.txt and gpu.txt pin every package exactly, name no index or
host, satisfy pyproject.toml's ranges, and are what `make install` (and so CI) installs through."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import sysconfig
import tomllib

import pytest
from conftest import ROOT
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

LOCKS = {"cpu": ("dev", "vllm-cpu"), "gpu": ("dev", "vllm")}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([a-z0-9]+(?:-[a-z0-9]+)*)==([0-9][0-9A-Za-z.!]*)$")  # canonical name, public version


def _lock_module():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "constraints" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def read_lock(target: str) -> tuple[dict[str, str], dict[str, str]]:
    """({name: version}, the marker environment named by the header) of constraints/<target>.txt."""
    text = (ROOT / "constraints" / f"{target}.txt").read_text()
    pins: dict[str, str] = {}
    env = dict(default_environment())
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            if m := re.search(r"Resolved for Python (\d+)\.(\d+)\.(\d+) on (\S+) (\S+);", line):
                env.update(python_version=f"{m[1]}.{m[2]}", python_full_version=f"{m[1]}.{m[2]}.{m[3]}",
                           sys_platform=m[4], platform_machine=m[5])
            continue
        m = PIN.match(line)
        assert m, f"constraints/{target}.txt line {n} is not an exact pin `name==version`: {line!r}"
        assert m[1] not in pins, f"constraints/{target}.txt pins {m[1]} twice"
        pins[m[1]] = m[2]
    return pins, env


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][extra]]
    return reqs


@pytest.mark.parametrize("target", sorted(LOCKS))
def test_lock_pins_every_package_exactly_with_no_index_or_host(target):
    text = (ROOT / "constraints" / f"{target}.txt").read_text()
    pins, env = read_lock(target)
    assert len(pins) > 50 and "torch" in pins and "trl" in pins and "pip" in pins
    assert list(pins) == sorted(pins), f"constraints/{target}.txt is not sorted"
    assert "python_full_version" in env, f"constraints/{target}.txt's header names no Python and platform"
    for bad in ("://", "--index-url", "--extra-index-url", "--find-links", "-f ", "-i ", "--hash", "@ ",
                "file:", "/opt/", "localhost"):
        assert bad not in text, f"constraints/{target}.txt holds {bad!r}"
    assert not re.search(r"\b[\w-]+\.(org|com|net|io|dev|ai)\b", text), f"constraints/{target}.txt names a host"


def range_violations(pins: dict[str, str], env: dict[str, str], extras: tuple[str, ...]) -> list[str]:
    """Each requirement of the install (dependencies and ``extras``) that applies on ``env`` and is unpinned
    or pinned outside pyproject's range."""
    bad = []
    for req in requirements(extras):
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = lock.canonical(req.name)
        if name not in pins:
            bad.append(f"{req}: not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            bad.append(f"{req}: pinned {name}=={pins[name]}")
    return bad


@pytest.mark.parametrize("target", sorted(LOCKS))
def test_pins_satisfy_pyproject_ranges(target):
    """Every requirement of the install (dependencies and the target's extras) that applies to the lock's
    platform is pinned, to a version inside pyproject's range."""
    pins, env = read_lock(target)
    assert range_violations(pins, env, LOCKS[target]) == [], f"constraints/{target}.txt vs pyproject.toml"


def test_the_range_check_catches_a_pin_outside_a_range_and_a_missing_pin():
    pins, env = read_lock("cpu")
    broken = {**pins, "transformers": "5.19.0", "trl": "1.17.0"}
    del broken["hydra-core"]
    found = "\n".join(range_violations(broken, env, LOCKS["cpu"]))
    assert "trl==1.17.0" in found and "hydra-core<1.4,>=1.3.2: not pinned" in found
    assert "transformers==5.19.0" in found  # outside the vllm-cpu extra's transformers<5.18
    # the vllm-cpu requirement applies on x86_64 only
    arm = {**env, "platform_machine": "aarch64"}
    assert not any("vllm-cpu" in v for v in range_violations({**pins, "vllm-cpu": "0.1"}, arm, LOCKS["cpu"]))
    assert any("vllm-cpu" in v for v in range_violations({**pins, "vllm-cpu": "0.1"}, env, LOCKS["cpu"]))


def test_the_cpu_vllm_is_inside_the_range_of_the_cuda_extra():
    """TRL 1.16 supports vLLM 0.22 to 0.31 (the `vllm` extra's range); the CPU build is pinned inside it."""
    cuda_range = next(Requirement(r) for r in PYPROJECT["optional-dependencies"]["vllm"]
                      if lock.canonical(Requirement(r).name) == "vllm").specifier
    cpu, _ = read_lock("cpu")
    gpu, _ = read_lock("gpu")
    assert cuda_range.contains(cpu["vllm-cpu"]) and cuda_range.contains(gpu["vllm"]), (cpu["vllm-cpu"], cuda_range)
    assert cpu["vllm-cpu"] == gpu["vllm"]  # the same vLLM on both, so the private parts patched are the same


def test_makefile_installs_through_the_lock_and_pins_the_same_torch():
    make = (ROOT / "Makefile").read_text()
    torch = Requirement(re.search(r"^TORCH \?= (\S+)$", make, re.M)[1])
    for target in LOCKS:
        assert torch.specifier.contains(read_lock(target)[0]["torch"]), (target, str(torch))
    installs = [line for line in make.splitlines() if "pip install" in line and "$(BIN)" in line]
    assert installs and all("-c $(LOCK)" in line for line in installs), installs
    assert "lock:" in make and "constraints/lock.py" in make

    def lock_for(*overrides: str) -> str:
        out = subprocess.run(["make", "-s", "--eval", "print-lock: ; @echo $(LOCK)", "print-lock", *overrides],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return out.strip()

    assert lock_for() == "constraints/cpu.txt"  # the default EXTRAS=dev,vllm-cpu, as CI installs
    assert lock_for("EXTRAS=dev,vllm") == "constraints/gpu.txt"
    assert lock_for("EXTRAS=dev") == "constraints/cpu.txt"


def test_this_environment_is_the_lock():
    """The running environment was installed through the lock `make install` picks (vllm-cpu: cpu.txt,
    CUDA vllm: gpu.txt): every pinned package that is installed has its pinned version."""
    # the venv's own site-packages only: setuptools' _vendor folder, once on sys.path, holds older copies
    # of packaging, platformdirs and typing-extensions that are not installs
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    installed = {lock.canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=site)}
    target = "gpu" if "vllm" in installed and "vllm-cpu" not in installed else "cpu"
    pins, _ = read_lock(target)
    off = {n: (v, pins[n]) for n, v in installed.items()
           if n in pins and Version(Version(v).public) != Version(pins[n])}
    assert not off, (f"installed (version, pinned in constraints/{target}.txt): {off}; run `make install` "
                     "(it reinstalls through the lock)")


def test_lock_script_keeps_only_public_versions_and_drops_the_project():
    report = {"install": [{"metadata": {"name": "Torch", "version": "2.13.0+cpu"}},
                          {"metadata": {"name": "typing_extensions", "version": "4.16.0"}},
                          {"metadata": {"name": "cat_experiments", "version": "0.1.0"}}],
              "environment": {"python_full_version": "3.11.7", "sys_platform": "linux", "platform_machine": "x86_64"}}
    pins = lock.pins_from_report(report)
    assert pins == {"torch": "2.13.0", "typing-extensions": "4.16.0"}
    text = lock.render(pins, "cpu", "dev", "torch==2.13.0", report["environment"])
    assert "torch==2.13.0\ntyping-extensions==4.16.0\n" in text
    assert "Resolved for Python 3.11.7 on linux x86_64;" in text
    assert SpecifierSet("==2.13.0").contains("2.13.0+cpu")  # why dropping the label keeps the CPU build
    assert subprocess.run([sys.executable, str(ROOT / "constraints" / "lock.py"), "--help"],
                          capture_output=True, text=True).returncode == 0
