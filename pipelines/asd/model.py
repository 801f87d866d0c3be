"""Light-ASD (Liao et al., CVPR 2023) as a plain torch module that loads the published weights.

The layout follows the published checkpoint's state_dict exactly (192 tensors), so
``load_state_dict(strict=True)`` checks every name and shape:

- ``model.visualEncoder.block{1,2,3}``: 1 -> 32 -> 64 -> 128 channels over (B, C, T, H, W).
  Each block has two branches, one with 3-wide and one with 5-wide kernels; a branch is a
  spatial conv (1, k, k) then a temporal conv (k, 1, 1), each followed by BatchNorm and ReLU.
  The branch sum goes through a 1x1x1 conv, BatchNorm and ReLU. Only block1 strides
  spatially (1, 2, 2). A 3x3 spatial max pool with stride 2 follows block1 and block2;
  after block3 every frame is max-pooled over all of its positions -> (B, T, 128).
- ``model.audioEncoder.block{1,2,3}``: the same design in 2-D over (B, C, 13 MFCC bins, Ta):
  ``m`` convs (k, 1) mix MFCC bins, ``t`` convs (1, k) mix time. A max pool of 3 with
  stride 2 over time follows block1 and block2 (Ta -> Ta/4 = T); the mean over the
  13 bins gives (B, T, 128).
- fusion by element-wise sum, then ``model.GRU``: a forward GRU, GELU, the time axis
  flipped, a second GRU, flipped back, GELU (a bidirectional GRU run in sequence).
- heads ``lossAV.FC`` (the audio-visual speaking score) and ``lossV.FC`` (visual only,
  used in training; kept so that the checkpoint loads strictly).

Every conv is bias-free and every BatchNorm uses eps=1e-3, momentum=0.01.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# Grayscale face statistics used for training (pixel values scaled to 0..1).
VIDEO_MEAN = 0.4161
VIDEO_STD = 0.1688
STATE_TENSORS = 192


def _bn3d(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class VisualBlock(nn.Module):
    """Two (spatial conv -> temporal conv) branches of width 3 and 5, summed and mixed 1x1x1."""

    def __init__(self, in_channels: int, out_channels: int, spatial_stride: int = 1):
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.s_3 = nn.Conv3d(in_channels, out_channels, (1, 3, 3), stride=stride, padding=(0, 1, 1), bias=False)
        self.bn_s_3 = _bn3d(out_channels)
        self.t_3 = nn.Conv3d(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn_t_3 = _bn3d(out_channels)
        self.s_5 = nn.Conv3d(in_channels, out_channels, (1, 5, 5), stride=stride, padding=(0, 2, 2), bias=False)
        self.bn_s_5 = _bn3d(out_channels)
        self.t_5 = nn.Conv3d(out_channels, out_channels, (5, 1, 1), padding=(2, 0, 0), bias=False)
        self.bn_t_5 = _bn3d(out_channels)
        self.last = nn.Conv3d(out_channels, out_channels, (1, 1, 1), bias=False)
        self.bn_last = _bn3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = F.relu(self.bn_t_3(_temporal_conv(self.t_3, F.relu(self.bn_s_3(self.s_3(x))))))
        b5 = F.relu(self.bn_t_5(_temporal_conv(self.t_5, F.relu(self.bn_s_5(self.s_5(x))))))
        return F.relu(self.bn_last(self.last(b3 + b5)))


def _temporal_conv(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a (k, 1, 1) kernel, run as a 2-D conv over (T, H*W): same result, and
    about twice as fast on CPU as the generic 3-D convolution."""
    b, c, t, h, w = x.shape
    y = F.conv2d(x.reshape(b, c, t, h * w), conv.weight.squeeze(-1), padding=(conv.padding[0], 0))
    return y.reshape(b, y.shape[1], t, h, w)


def fold_batchnorm(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one convolution that computes ``bn(conv(x))`` with ``bn``'s running
    statistics (eval mode): the per-channel scale moves into the weight, the shift into a bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, *[1] * (conv.weight.ndim - 1))
    return weight.detach().contiguous(), (bn.bias - bn.running_mean * scale).detach().contiguous()


class FoldedVisualBlock:
    """A :class:`VisualBlock` for inference on frames in channels-last layout (see
    :class:`FoldedVisualEncoder`): each BatchNorm folded into its convolution, ReLU in place."""

    def __init__(self, block: VisualBlock):
        def squeezed(conv: nn.Conv3d, bn: nn.BatchNorm3d, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
            weight, bias = fold_batchnorm(conv, bn)
            return weight.squeeze(dim), bias

        # (1, k, k) spatial kernels become 2-D kernels over (H, W); (k, 1, 1) temporal kernels 2-D
        # kernels over (T, H*W); the 1x1x1 mix a 1x1 kernel.
        self.s_3, self.s_5 = squeezed(block.s_3, block.bn_s_3, 2), squeezed(block.s_5, block.bn_s_5, 2)
        self.t_3, self.t_5 = squeezed(block.t_3, block.bn_t_3, 4), squeezed(block.t_5, block.bn_t_5, 4)
        self.last = squeezed(block.last, block.bn_last, 2)
        self.stride = block.s_3.stride[1]

    def __call__(self, frames: torch.Tensor, windows: int) -> torch.Tensor:
        """(B*T, C, H, W) channels-last frames of ``windows`` windows -> the block's output, the same layout."""
        b3 = self._branch(frames, windows, self.s_3, self.t_3)
        b5 = self._branch(frames, windows, self.s_5, self.t_5)
        return F.relu_(F.conv2d(b3.add_(b5), *self.last))

    def _branch(self, frames: torch.Tensor, windows: int, spatial: tuple, temporal: tuple) -> torch.Tensor:
        x = F.relu_(F.conv2d(frames, *spatial, self.stride, spatial[0].shape[-1] // 2))
        height, width = x.shape[-2:]
        x = F.relu_(F.conv2d(_time_view(x, windows), *temporal, 1, (temporal[0].shape[2] // 2, 0)))
        return _frames_view(x, height, width)


def _time_view(frames: torch.Tensor, windows: int) -> torch.Tensor:
    """(B*T, C, H, W) channels-last frames as (B, C, T, H*W) channels-last: the same memory, (B, T, H, W, C)."""
    count, channels, height, width = frames.shape
    return frames.permute(0, 2, 3, 1).reshape(windows, count // windows, height * width, channels).permute(0, 3, 1, 2)


def _frames_view(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`_time_view`."""
    windows, channels, time, _ = x.shape
    return x.permute(0, 2, 3, 1).reshape(windows * time, height, width, channels).permute(0, 3, 1, 2)


class FoldedVisualEncoder:
    """:class:`VisualEncoder` for inference, a snapshot of its eval-mode weights.

    Every BatchNorm is folded into the convolution before it and ReLUs run in place. The
    activations stay in one channels-last layout, (B, T, H, W, C) in memory, seen as B*T frames
    (B*T, C, H, W) by the spatial convolutions and 2-D max pools and as (B, C, T, H*W) by the
    temporal ones: both views are the same memory, so no convolution reorders its input. The
    module's own layout (B, C, T, H, W) makes oneDNN reorder the large block1 activations for
    every convolution, and its batch norms, out-of-place ReLUs and 3-D pools with indices each
    stream them through memory again. Same function up to float rounding (largest difference
    of the 128-d embedding 3e-6 on random faces); about 55% less CPU time than the module on
    the 2-core development machine (bench/results/scale_parts.md).
    """

    def __init__(self, encoder: VisualEncoder):
        self.blocks = [FoldedVisualBlock(encoder.block1), FoldedVisualBlock(encoder.block2),
                       FoldedVisualBlock(encoder.block3)]

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) normalised faces -> (B, T, 128)."""
        windows, time, height, width = video.shape
        x = self.blocks[0](video.reshape(windows * time, height, width, 1).permute(0, 3, 1, 2), windows)
        x = self.blocks[1](F.max_pool2d(x, 3, 2, 1), windows)  # VisualEncoder's MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        x = self.blocks[2](F.max_pool2d(x, 3, 2, 1), windows)
        return torch.amax(x, dim=(2, 3)).reshape(windows, time, -1)


class AudioBlock(nn.Module):
    """Two (MFCC-axis conv -> time conv) branches of width 3 and 5, summed and mixed 1x1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.m_3 = nn.Conv2d(in_channels, out_channels, (3, 1), padding=(1, 0), bias=False)
        self.bn_m_3 = _bn2d(out_channels)
        self.t_3 = nn.Conv2d(out_channels, out_channels, (1, 3), padding=(0, 1), bias=False)
        self.bn_t_3 = _bn2d(out_channels)
        self.m_5 = nn.Conv2d(in_channels, out_channels, (5, 1), padding=(2, 0), bias=False)
        self.bn_m_5 = _bn2d(out_channels)
        self.t_5 = nn.Conv2d(out_channels, out_channels, (1, 5), padding=(0, 2), bias=False)
        self.bn_t_5 = _bn2d(out_channels)
        self.last = nn.Conv2d(out_channels, out_channels, (1, 1), bias=False)
        self.bn_last = _bn2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = F.relu(self.bn_t_3(self.t_3(F.relu(self.bn_m_3(self.m_3(x))))))
        b5 = F.relu(self.bn_t_5(self.t_5(F.relu(self.bn_m_5(self.m_5(x))))))
        return F.relu(self.bn_last(self.last(b3 + b5)))


class VisualEncoder(nn.Module):
    """(B, T, 112, 112) normalised grayscale faces -> (B, T, 128)."""

    def __init__(self):
        super().__init__()
        self.block1 = VisualBlock(1, 32, spatial_stride=2)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block2 = VisualBlock(32, 64)
        self.pool2 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block3 = VisualBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (B, 1, T, H, W)
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)  # (B, 128, T, h, w)
        x = torch.amax(x, dim=(3, 4))  # per-frame global spatial max -> (B, 128, T)
        return x.transpose(1, 2)


class AudioEncoder(nn.Module):
    """(B, Ta, 13) MFCC -> (B, Ta/4, 128)."""

    def __init__(self):
        super().__init__()
        self.block1 = AudioBlock(1, 32)
        self.pool1 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block2 = AudioBlock(32, 64)
        self.pool2 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block3 = AudioBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2).unsqueeze(1)  # (B, 1, 13, Ta)
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)  # (B, 128, 13, Ta/4)
        x = x.mean(dim=2)  # average over the MFCC bins -> (B, 128, Ta/4)
        return x.transpose(1, 2)


class SequentialBiGRU(nn.Module):
    """Forward GRU, GELU, then a second GRU over the reversed sequence, GELU."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.gru_forward = nn.GRU(channels, channels, num_layers=1, batch_first=True)
        self.gru_backward = nn.GRU(channels, channels, num_layers=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.gru_forward(x)
        x = F.gelu(x)
        x, _ = self.gru_backward(torch.flip(x, dims=[1]))
        return F.gelu(torch.flip(x, dims=[1]))


class _Backbone(nn.Module):
    """The ``model.*`` part of the checkpoint: both encoders and the fusion GRU."""

    def __init__(self):
        super().__init__()
        self.visualEncoder = VisualEncoder()
        self.audioEncoder = AudioEncoder()
        self.GRU = SequentialBiGRU(128)


class _Head(nn.Module):
    """A ``loss*`` entry of the checkpoint: only its ``FC`` layer matters at inference."""

    def __init__(self):
        super().__init__()
        self.FC = nn.Linear(128, 2)


class LightASD(nn.Module):
    """Light-ASD with the published checkpoint's parameter names.

    ``forward(audio_mfcc, video)`` takes MFCC features (B, 4T, 13) at 100 frames/s and
    grayscale face crops (B, T, 112, 112) at 25 fps with raw pixel values 0..255 (float),
    and returns the audio-visual head's logits (B, T, 2); index 1 is "speaking".
    """

    def __init__(self):
        super().__init__()
        self.model = _Backbone()
        self.lossAV = _Head()
        self.lossV = _Head()
        self._folded_visual: FoldedVisualEncoder | None = None

    def fold_for_inference(self) -> LightASD:
        """Snapshot the visual encoder's current weights into a :class:`FoldedVisualEncoder`, used
        from now on while the model is in eval mode (``train()`` drops it). Call it after moving
        the model to its device: the snapshot is plain tensors, which ``.to()`` does not move."""
        self._folded_visual = FoldedVisualEncoder(self.model.visualEncoder)
        return self

    def train(self, mode: bool = True) -> LightASD:
        if mode:
            self._folded_visual = None  # weights may change from here on: the snapshot would go stale
        return super().train(mode)

    def embed(self, audio_mfcc: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Fused audio-visual features after the GRU, (B, T, 128)."""
        if video.ndim != 4 or audio_mfcc.ndim != 3 or audio_mfcc.shape[-1] != 13:
            raise ValueError(f"expected audio (B, 4T, 13) and video (B, T, H, W), got "
                             f"{tuple(audio_mfcc.shape)} and {tuple(video.shape)}")
        if audio_mfcc.shape[1] != 4 * video.shape[1]:
            raise ValueError(f"audio has {audio_mfcc.shape[1]} MFCC frames for {video.shape[1]} video frames "
                             "(need exactly 4 per video frame)")
        return self.model.GRU(self.encode_audio(audio_mfcc) + self.encode_visual(video))

    def forward(self, audio_mfcc: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return self.lossAV.FC(self.embed(audio_mfcc, video))

    # The three parts below are forward() taken apart, so that a caller trying many audio
    # alignments against one face track (pipelines/asd/sync.py) runs the visual encoder, by far
    # the costliest part, once, and only the audio encoder, GRU and head per alignment.

    def encode_visual(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 112, 112) raw 0..255 grey faces -> (B, T, 128), normalised as in training; in eval
        mode through the folded copy when :meth:`fold_for_inference` made one."""
        video = (video / 255.0 - VIDEO_MEAN) / VIDEO_STD
        if self._folded_visual is not None and not self.training:
            return self._folded_visual(video)
        return self.model.visualEncoder(video)

    def encode_audio(self, audio_mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 13) MFCC -> (B, T, 128). Convolutions and two stride-2 pools: shifting the
        input by 4 rows shifts the output by one frame, away from the ends."""
        return self.model.audioEncoder(audio_mfcc)

    def logits_from_embeddings(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Fusion (sum), GRU and audio-visual head on encoder outputs of equal shape (B, T, 128)."""
        return self.lossAV.FC(self.model.GRU(audio + visual))


def load_light_asd(path: str | Path, device: str | torch.device = "cpu") -> LightASD:
    """Build :class:`LightASD`, load a published checkpoint strictly, move it to ``device``, eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Light-ASD weights not found: {path} (expected a state_dict such as "
            "light-asd/pretrain_AVA_CVPR.model in the model directory)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state_dict (got {type(state).__name__})")
    model = LightASD()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval().fold_for_inference()
