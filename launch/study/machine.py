"""The machine description a study records: CPU, memory, GPUs and their links, versions, commit.

Everything is read from the system (/proc, lscpu, nvidia-smi, mpirun --version, git); what
cannot be read is recorded as "unknown", never guessed.
"""
import os
import platform
import shutil
import subprocess


def _out(cmd, timeout=20):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.stdout.strip() if p.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _cpu():
    info = {"model": "unknown", "logical_cpus": os.cpu_count(), "flags_of_note": []}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name") and info["model"] == "unknown":
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["flags_of_note"] = sorted(flags & {"avx2", "avx512f", "avx512bw",
                                                        "avx512_vnni", "avx512vbmi", "amx_tile"})
                break
    except OSError:
        pass
    lscpu = _out(["lscpu"]) or ""
    for line in lscpu.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("Socket(s)", "Core(s) per socket", "Thread(s) per core", "NUMA node(s)"):
            info[k.strip().lower().replace("(s)", "s").replace(" ", "_")] = v.strip()
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


def _memory_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1e6, 1)
    except OSError:
        pass
    return None


def _gpus():
    if not shutil.which("nvidia-smi"):
        return {"gpus": [], "topology": "no nvidia-smi: no GPU on this machine"}
    q = _out(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version,pcie.link.gen.max",
              "--format=csv,noheader"])
    gpus = [dict(zip(("index", "name", "memory", "driver", "pcie_gen"),
                     [c.strip() for c in line.split(",")])) for line in (q or "").splitlines()]
    topo = _out(["nvidia-smi", "topo", "-m"]) or "unknown"
    return {"gpus": gpus, "topology": topo}


def _git(root):
    commit = _out(["git", "-C", root, "rev-parse", "HEAD"]) or "unknown"
    dirty = _out(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(dirty)}


def describe(tritmoe, mpirun, root):
    """A JSON-ready dict describing this machine and the software the study runs."""
    mpi = _out([mpirun, "--version"]) if mpirun else None
    g = _gpus()
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpu": _cpu(),
        "memory_gb": _memory_gb(),
        "gpus": g["gpus"],
        "link_topology": g["topology"] if g["gpus"] else
        "one host, ranks talk through MPI shared memory (Open MPI btl vader, no CMA)",
        "load_average": os.getloadavg(),
        "versions": {
            "tritmoe": _out([tritmoe, "--version"]) or "0.1.0 (no --version flag)",
            "mpirun": (mpi or "none").splitlines()[0] if mpi is not None else "none",
            "python": platform.python_version(),
        },
        "git": _git(root),
    }
