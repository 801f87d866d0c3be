"""Pictures a person would rather look at than read: crop previews and QC plots."""

from __future__ import annotations

import io
from pathlib import Path

import av
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def preview_png(mp4: Path, max_frames: int = 4, thumb_px: int = 160) -> bytes:
    """A strip of frames evenly spread over a (small, 384 px) clip, as PNG bytes."""
    with av.open(str(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{mp4} has no video frames")
    picks = np.linspace(0, len(frames) - 1, num=min(max_frames, len(frames))).round().astype(int)
    thumbs = [Image.fromarray(frames[i]).resize((thumb_px, thumb_px)) for i in picks]
    strip = Image.new("RGB", (thumb_px * len(thumbs), thumb_px))
    for n, thumb in enumerate(thumbs):
        strip.paste(thumb, (n * thumb_px, 0))
    out = io.BytesIO()
    strip.save(out, format="PNG")
    return out.getvalue()


def qc_plot_png(stats: dict, durations: list[float]) -> bytes:
    """Accepted clip durations and rejection reasons (sources and segments) side by side."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if durations:
        left.hist(durations, bins=min(30, max(5, len(durations))), color="#4c72b0")
    left.set_title(f"accepted clips: {len(durations)} ({sum(durations) / 60:.1f} min)")
    left.set_xlabel("clip duration (s)")
    left.set_ylabel("clips")
    reasons = {f"source: {k}": v for k, v in stats["sources"]["rejected_by_reason"].items()}
    reasons.update({f"segment: {k}": v for k, v in stats["segments"]["rejected_by_reason"].items()})
    if reasons:
        names = list(reasons)
        right.barh(names, [reasons[n] for n in names], color="#dd8452")
        right.invert_yaxis()
    else:
        right.text(0.5, 0.5, "no rejections", ha="center", va="center")
        right.set_yticks([])
    right.set_title("rejections by reason")
    right.set_xlabel("count")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()
