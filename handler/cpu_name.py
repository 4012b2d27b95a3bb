"""The CPU's name for runpod's debugger, read from /proc/cpuinfo instead of timing the CPU.

runpod.serverless imports its debugger module, which asks py-cpuinfo for the processor's name at
import time; py-cpuinfo starts a second Python process and measures the clock for that, about a
second at every worker start (a cold start RunPod bills, and a local run waits for). The name alone
is in /proc/cpuinfo. Installed before runpod is imported; nothing else in the worker uses cpuinfo.
"""

from __future__ import annotations

from pathlib import Path


def processor_name(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> str:
    """The first 'model name' in /proc/cpuinfo, or what py-cpuinfo says when it cannot be read."""
    try:
        for line in cpuinfo_path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return "Unable to get processor info."


def answer_cpuinfo_from_proc() -> None:
    """Make py-cpuinfo's get_cpu_info() answer the processor's name without a subprocess."""
    import cpuinfo

    name = processor_name()
    cpuinfo.get_cpu_info = lambda: {"brand_raw": name}
