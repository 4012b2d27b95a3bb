"""`python -m bench.gpu_kit`: pack what the Parakeet GPU benchmark needs for an offline GPU host.

A GPU host with Python (3.12 by default) and a CUDA build of PyTorch, but without NeMo and without
access to a package registry, can still run bench.parakeet_size: NeMo and every package of its
that such a host lacks travel as wheels beside the working tree, and one script runs there:

    python -m bench.gpu_kit                    # here: wheels into .whl/, speech into bench/work/gpu/
    # copy the repository with .whl/ and bench/work/gpu/ to the GPU host, then there:
    bash bench/gpu_device.sh                   # results in $OUT: device.log, parakeet_size.json

KIT lists the packages the Parakeet path (bench/tiny_nemo building the model,
handler/engines/parakeet.NemoEngine running it) imports beyond a PyTorch image's own: found by
running that path in a virtual environment holding only such an image's packages plus these.
Versions are the ones the tests run with (builder/constraints.txt). lightning travels although
PyTorch images often have it: NeMo 3.0 wants lightning <= 2.4.0, and the carried copy comes first
on PYTHONPATH there. The speech travels as a plain 16 kHz WAV, so the host needs no PyAV.

Whisper is not in the kit: CTranslate2's PyPI wheels load CUDA 12's cuBLAS (libcublas.so.12); on
a CUDA 13 host that library is missing (gpu_device.sh reports whether it is there). The worker
image (Dockerfile) has its own CUDA 12 base.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from handler.engines.base import SAMPLE_RATE

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
SPEECH = ROOT / "bench" / "work" / "gpu" / "speech.wav"
CONSTRAINTS = ROOT / "builder" / "constraints.txt"
# What travels with each device call: the working tree and the carried folders together.
TRAVEL_LIMIT = 64 * 2**20  # what a copy to the GPU host should stay under (wheels, speech and the tree)

KIT = [
    "nemo-toolkit",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "lightning",
    "lhotse",
    "librosa",
    "soundfile",
    "cffi",
    "soxr",
    "audioread",
    "kaldialign",
    "braceexpand",
    "webdataset",
    "intervaltree",
    "cytoolz",
    "datasets",
    "dill",
    "multiprocess",
    "nv-one-logger-core",
    "nv-one-logger-training-telemetry",
    "nv-one-logger-pytorch-lightning-integration",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "overrides",
    "strenum",
    "toml",
    "decorator",
    "pooch",
    "platformdirs",
]

# pip's platform tags for the device (x86-64, glibc 2.28 or newer is enough for these wheels).
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(names: list[str], constraints: Path = CONSTRAINTS) -> list[str]:
    """name==version for each name, the version from the constraints file (the tested one)."""
    versions: dict[str, str] = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            versions[_norm(name)] = version.split(";")[0].strip()
    missing = [name for name in names if _norm(name) not in versions]
    if missing:
        raise SystemExit(f"not pinned in {constraints}: {', '.join(missing)}")
    return [f"{name}=={versions[_norm(name)]}" for name in names]


def fetch_wheels(dest: Path, python_version: str) -> list[Path]:
    """Download the kit's wheels (no dependencies: the kit lists them) for the given Python.

    A package published only as a source archive (antlr4-python3-runtime 4.9.3, intervaltree) is
    pure Python: it is built into a wheel here, which installs on any Python there."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()  # one version of each: two stop the whole install there
    download = [
        sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp", "-d", str(dest),
    ]  # fmt: skip
    for platform in PLATFORMS:
        download += ["--platform", platform]
    for requirement in pinned(KIT):
        if subprocess.run([*download, requirement], capture_output=True).returncode == 0:
            continue
        before = set(dest.glob("*.whl"))
        build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), requirement]
        subprocess.run(build, check=True)
        for built in set(dest.glob("*.whl")) - before:
            if not built.name.endswith("-none-any.whl"):
                # Built for this machine's Python, not the device's: it would not install there.
                built.unlink()
                raise SystemExit(
                    f"{requirement} has no wheel for Python {python_version} and is not pure Python"
                )
    return sorted(dest.glob("*.whl"))


def write_speech(dest: Path, seconds: float) -> Path:
    """The benchmark corpus's long recording of real speech, its first `seconds`, as a plain
    16 kHz mono 16-bit WAV: the device reads it with handler/wav.py and needs no PyAV."""
    from bench.corpus import build_corpus
    from handler.decode import decode_audio

    corpus = build_corpus()
    recording = decode_audio(corpus.long_path, 4 * 3600.0)[: int(seconds * SAMPLE_RATE)]
    pcm = np.clip(np.round(recording * 32768.0), -32768, 32767).astype("<i2")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(dest), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return dest


def tracked_bytes() -> int:
    """Bytes of the working tree that travels: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return sum(
        (ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python-version", default="3.12", help="the device's Python (3.12 there)")
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--speech-s", type=float, default=120.0, help="seconds of real speech to carry")
    args = parser.parse_args(argv)

    wheels = fetch_wheels(args.wheels, args.python_version)
    speech = write_speech(SPEECH, args.speech_s)
    wheel_bytes = sum(path.stat().st_size for path in wheels)
    total = wheel_bytes + speech.stat().st_size + tracked_bytes()
    print(f"{len(wheels)} wheels, {wheel_bytes / 2**20:.1f} MiB, in {args.wheels}")
    print(f"speech: {speech} ({args.speech_s:.0f} s)")
    print(f"travels per call: {total / 2**20:.1f} MiB of {TRAVEL_LIMIT / 2**20:.0f} MiB")
    if total > TRAVEL_LIMIT:
        raise SystemExit(f"more than {TRAVEL_LIMIT / 2**20:.0f} MiB to carry: carry less speech (--speech-s)")
    print("on the GPU host, with .whl/ and bench/work/gpu/ beside the repository: bash bench/gpu_device.sh")


if __name__ == "__main__":
    main()
