"""``device: cuda`` is checked against what the installed packages can reach, per stage builder:
here (CPU builds of onnxruntime and torch, no GPU) each builder refuses it with a message that
names the package; where a GPU is reachable, the CUDA provider list is what is chosen.
Thread limits per worker reach torch and the onnxruntime sessions."""

from __future__ import annotations

import subprocess
import sys

import onnxruntime
import pytest
import torch

from pipelines.config import load_config
from pipelines.devices import (CPU_PROVIDER, CUDA_PROVIDER, DeviceUnavailable, ctranslate2_device, onnx_providers,
                               torch_device)
from pipelines.faces.detectors import build_detector
from pipelines.models import ModelStore

ORT_HAS_CUDA = CUDA_PROVIDER in onnxruntime.get_available_providers()
TORCH_HAS_CUDA = torch.cuda.is_available()


def _config(tmp_path, model_dir, **sections):
    return load_config(paths={"data_dir": tmp_path / "data", "input_dir": tmp_path, "model_dir": model_dir},
                       **sections)


def test_cpu_uses_the_cpu_provider_alone_and_unknown_devices_are_refused():
    assert onnx_providers("cpu") == [CPU_PROVIDER]
    assert torch_device("cpu") == "cpu" and ctranslate2_device("cpu") == "cpu"
    for check in (onnx_providers, torch_device, ctranslate2_device):
        with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
            check("tpu")


def test_cuda_asks_onnxruntime_for_its_cuda_provider():
    if ORT_HAS_CUDA:
        assert onnx_providers("cuda") == [CUDA_PROVIDER, CPU_PROVIDER]
    else:
        with pytest.raises(DeviceUnavailable, match="install onnxruntime-gpu"):
            onnx_providers("cuda")


def test_scrfd_session_is_placed_on_the_configured_device(tmp_path, model_dir, scrfd_model):
    config = _config(tmp_path, model_dir)
    detector = build_detector(config.faces, ModelStore(model_dir))
    assert detector.providers == [CPU_PROVIDER] and detector.session_providers == [CPU_PROVIDER]
    detector.close()
    cuda = _config(tmp_path, model_dir, faces={"device": "cuda"})
    if ORT_HAS_CUDA:
        on_gpu = build_detector(cuda.faces, ModelStore(model_dir))
        assert on_gpu.session_providers[0] == CUDA_PROVIDER
    else:
        with pytest.raises(DeviceUnavailable, match="onnxruntime .* has no CUDAExecutionProvider"):
            build_detector(cuda.faces, ModelStore(model_dir))


def test_mediapipe_refuses_cuda(tmp_path, model_dir):
    if not (model_dir / "mediapipe" / "face_detection_short_range.tflite").is_file():
        pytest.skip("MediaPipe model not in the model dir")
    config = _config(tmp_path, model_dir, faces={"backend": "mediapipe", "device": "cuda"})
    with pytest.raises(DeviceUnavailable, match="CPU only"):
        build_detector(config.faces, ModelStore(model_dir))


@pytest.mark.skipif(TORCH_HAS_CUDA, reason="torch reaches a GPU here: the refusal cannot happen")
def test_torch_stages_refuse_cuda_without_a_gpu(tmp_path, model_dir):
    from pipelines.registry import stage

    with pytest.raises(DeviceUnavailable, match=r"torch\.cuda\.is_available\(\) is False"):
        torch_device("cuda")
    if (model_dir / "light-asd" / "pretrain_AVA_CVPR.model").is_file():
        with pytest.raises(DeviceUnavailable, match="torch"):
            stage("asd").build_backend(_config(tmp_path, model_dir, asd={"device": "cuda"}))
    # The speech builder checks torch before it loads any model.
    with pytest.raises(DeviceUnavailable, match="torch"):
        stage("speech").build_backend(_config(tmp_path, model_dir, speech={"device": "cuda"}))


def test_ctranslate2_refuses_cuda_without_a_gpu():
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        assert ctranslate2_device("cuda") == "cuda"
    else:
        with pytest.raises(DeviceUnavailable, match="CTranslate2 .* sees no CUDA device"):
            ctranslate2_device("cuda")


def test_a_thread_limit_reaches_torch_and_new_onnxruntime_sessions(model_dir, scrfd_model):
    # In a fresh interpreter, as in a worker: the limit is process-wide.
    script = f"""
from pathlib import Path
import torch
from pipelines.devices import set_thread_limit
from pipelines.faces.detectors import ScrfdDetector
set_thread_limit(1)
detector = ScrfdDetector(Path({str(scrfd_model)!r}), 640, 0.5)
options = detector._model.session.get_session_options()
print(torch.get_num_threads(), options.intra_op_num_threads)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]


def test_detector_threads_sleep_between_runs_with_or_without_a_thread_limit(model_dir, scrfd_model):
    # Spinning intra-op threads take a core from the Python decode/crop work between detector calls.
    script = f"""
from pathlib import Path
from pipelines.devices import set_thread_limit
from pipelines.faces.detectors import ScrfdDetector
def spinning():
    detector = ScrfdDetector(Path({str(scrfd_model)!r}), 640, 0.5)
    return detector._model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
print(spinning())
set_thread_limit(1)
print(spinning())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0"]
