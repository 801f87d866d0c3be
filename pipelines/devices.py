"""The device each model stage runs on, and the CPU threads one worker process may use.

``device: cuda`` in a stage's config section is a demand, not a hint: when the installed
package cannot reach a GPU (onnxruntime without its CUDA provider, a CPU build of torch, no
CUDA device for CTranslate2) the backend builder raises :class:`DeviceUnavailable` naming
the package and what to install. Falling back to the CPU would turn a misconfigured GPU
deployment into a run many times slower whose records look the same; failing at build time
costs one restart. On CPU no check is made.

Thread limits: N worker processes on C cores each get ``C // N`` threads (at least one)
unless ``runtime.threads_per_worker`` says otherwise; :func:`set_thread_limit` records the
limit in this process and applies it to torch, and the builders of onnxruntime sessions
and CTranslate2 models read it with :func:`thread_limit`.
"""

from __future__ import annotations

import os

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# Environment variables the numeric libraries read once at import: set in a fresh worker
# before torch or numpy load, so their pools start at the limit.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_thread_limit: int | None = None


class DeviceUnavailable(RuntimeError):
    """``device: cuda`` was configured but the package that would run the model cannot use a GPU."""


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device``: CUDA first with the CPU provider behind it
    (onnxruntime places the few operators CUDA lacks on the CPU), or the CPU alone."""
    if device == "cpu":
        return [CPU_PROVIDER]
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if CUDA_PROVIDER not in available:
        raise DeviceUnavailable(
            f"device: cuda, but onnxruntime {onnxruntime.__version__} has no {CUDA_PROVIDER} (available: "
            f"{', '.join(available)}); the CPU build is installed: install onnxruntime-gpu instead of onnxruntime")
    return [CUDA_PROVIDER, CPU_PROVIDER]


def torch_device(device: str) -> str:
    """``device`` for torch, after checking that torch can reach a GPU when it is ``cuda``."""
    if device == "cpu":
        return device
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceUnavailable(f"device: cuda, but torch {torch.__version__} ({build}) sees no CUDA device "
                                "(torch.cuda.is_available() is False)")
    return device


def ctranslate2_device(device: str) -> str:
    """``device`` for CTranslate2 (faster-whisper), after checking that it sees a CUDA device."""
    if device == "cpu":
        return device
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    import ctranslate2

    if ctranslate2.get_cuda_device_count() < 1:
        raise DeviceUnavailable(f"device: cuda, but CTranslate2 {ctranslate2.__version__} sees no CUDA device")
    return device


def threads_per_worker(workers: int, configured: int | None = None, cores: int | None = None) -> int:
    """CPU threads for each of ``workers`` processes: ``configured``, else cores // workers (>= 1)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if configured is not None:
        return configured
    return max(1, (cores or os.cpu_count() or 1) // workers)


def set_thread_limit(threads: int) -> None:
    """Limit this process's model libraries to ``threads`` CPU threads (torch now; onnxruntime
    sessions and CTranslate2 models built from now on read :func:`thread_limit`)."""
    global _thread_limit
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _thread_limit = threads
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)


def thread_limit() -> int | None:
    """The limit :func:`set_thread_limit` set in this process, or None (the libraries' defaults)."""
    return _thread_limit


def onnx_session_options():
    """onnxruntime SessionOptions: the process's thread limit where one is set, and intra-op threads
    that sleep between runs instead of spin-waiting (``session.intra_op.allow_spinning`` 0).

    The face stage calls the detector between stretches of Python decode and crop work; spinning
    threads keep a core busy through those stretches and take it from the Python thread
    (bench/results/decode_less.md: face-stage non-model time / ffmpeg floor 1.55-1.75 spinning,
    1.29-1.48 sleeping, on 2 cores)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if _thread_limit is not None:
        options.intra_op_num_threads = _thread_limit
        options.inter_op_num_threads = 1
    return options
