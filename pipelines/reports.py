"""Pictures a person would rather look at than read: crop previews and QC plots."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines.media.decode import read_video_frames  # noqa: E402
from pipelines.schema.manifest import DatasetStats, FunnelStats  # noqa: E402
from pipelines.schema.records import Segment  # noqa: E402


def preview_png(mp4: Path, max_frames: int = 4, thumb_px: int = 160) -> bytes:
    """A strip of frames evenly spread over a (small, 384 px) clip, as PNG bytes."""
    frames = read_video_frames(mp4)
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


def qc_plot_png(stats: DatasetStats, segments: list[Segment]) -> bytes:
    """Dataset QC at a glance: accepted durations, rejections by reason, and the speech
    stage's overlap ratios and languages over every segment it decided."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    (durations_ax, reasons_ax), (overlap_ax, language_ax) = axes
    durations = [s.numbers["duration_s"] for s in segments if s.status == "accepted"]
    if durations:
        durations_ax.hist(durations, bins=min(30, max(5, len(durations))), color="#4c72b0")
    durations_ax.set_title(f"accepted clips: {len(durations)} ({sum(durations) / 60:.1f} min)")
    durations_ax.set_xlabel("clip duration (s)")
    durations_ax.set_ylabel("clips")

    reasons = {f"source: {k}": v for k, v in stats.sources.rejected_by_reason.items()}
    reasons.update({f"segment: {k}": v for k, v in stats.segments.rejected_by_reason.items()})
    _bars(reasons_ax, reasons, "rejections by reason", "#dd8452", "no rejections")

    ratios = [s.numbers["speech.overlap_ratio"] for s in segments if "speech.overlap_ratio" in s.numbers]
    limit = next((s.numbers["speech.max_overlap_ratio"] for s in segments
                  if "speech.max_overlap_ratio" in s.numbers), None)
    if ratios:
        overlap_ax.hist(ratios, bins=20, range=(0, 1), color="#55a868")
        if limit is not None:
            overlap_ax.axvline(limit, color="black", linestyle="--", label=f"limit {limit:.2f}")
            overlap_ax.legend()
    else:
        overlap_ax.text(0.5, 0.5, "speech stage has not run", ha="center", va="center")
    overlap_ax.set_title("overlapped / total speech per segment")
    overlap_ax.set_xlabel("overlap ratio")
    overlap_ax.set_ylabel("segments")

    languages: dict[str, int] = {}
    for s in segments:
        if "speech.language" in s.numbers:
            languages[s.numbers["speech.language"]] = languages.get(s.numbers["speech.language"], 0) + 1
    _bars(language_ax, languages, "speech language per segment", "#8172b2", "speech stage has not run")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()


def _bars(ax, counts: dict, title: str, colour: str, empty: str) -> None:
    if counts:
        names = list(counts)
        ax.barh(names, [counts[n] for n in names], color=colour)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center")
        ax.set_yticks([])
    ax.set_title(title)
    ax.set_xlabel("count")


def stage_numbers(segments: list[Segment], stage: str) -> list[dict]:
    """The numbers of each decision ``stage`` made, once per decision.

    Children inherit their parent's stage decisions (and a stage that splits a segment
    gives each child a copy with the child's numbers): a segment counts for ``stage`` only
    where its parent had not been through ``stage`` already.
    """
    by_key = {s.key: s for s in segments}
    out = []
    for segment in segments:
        parent = by_key.get(segment.parent) if segment.parent else None
        if stage in segment.stages and (parent is None or stage not in parent.stages):
            out.append(segment.stages[stage].numbers)
    return out


def _values(numbers: list[dict], key: str) -> list[float]:
    return [float(n[key]) for n in numbers if isinstance(n.get(key), int | float) and not isinstance(n[key], bool)]


def _no_data(ax, title: str, why: str) -> None:
    ax.text(0.5, 0.5, f"no data\n({why})", ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)


def _hist(ax, values: list[float], title: str, xlabel: str, why: str, colour: str, **kwargs) -> None:
    if not values:
        _no_data(ax, title, why)
        return
    ax.hist(values, color=colour, **kwargs)
    ax.set_title(f"{title} (n={len(values)}, median {np.median(values):.3g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("segments")


def _funnel_panel(ax, funnel: FunnelStats) -> None:
    """Horizontal bars: seconds kept, pending and lost per gate, each with its share of seconds in."""
    title = f"where {funnel.seconds_in:.1f} s of decoded video went"
    if funnel.seconds_in <= 0:
        _no_data(ax, title, "no decoded source")
        return
    bars = {"kept": funnel.seconds_kept, **({"pending": funnel.seconds_pending} if funnel.seconds_pending else {}),
            **dict(sorted(funnel.lost_s.items(), key=lambda kv: -kv[1]))}
    names = list(bars)
    colours = ["#55a868" if n == "kept" else "#8c8c8c" if n == "pending" else "#c44e52" for n in names]
    ax.barh(names, [bars[n] for n in names], color=colours)
    for y, name in enumerate(names):
        ax.text(bars[name], y, f" {bars[name]:.1f} s ({100 * bars[name] / funnel.seconds_in:.0f}%)",
                va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, funnel.seconds_in * 1.35)  # room for the labels
    ax.set_title(title)
    ax.set_xlabel("seconds of source video")


def gates_report_png(stats: DatasetStats, segments: list[Segment]) -> bytes:
    """The real-footage gates at a glance: the seconds funnel, face size (px and upscale),
    sharpness, head orientation, and audio-video offset and confidence.

    Panels whose stage is disabled or has not run say "no data".
    """
    quality, asd = stage_numbers(segments, "quality"), stage_numbers(segments, "asd")
    fig = plt.figure(figsize=(12, 13))
    grid = fig.add_gridspec(4, 2)
    _funnel_panel(fig.add_subplot(grid[0, :]), stats.funnel)
    axes = np.array([[None, None], *[[fig.add_subplot(grid[r, c]) for c in range(2)] for r in range(1, 4)]])
    no_quality = "quality stage has not run"
    _hist(axes[1, 0], _values(quality, "face_px_median"), "face size", "median face side (source px)", no_quality,
          "#4c72b0", bins=20)
    _hist(axes[1, 1], _values(quality, "upscale_median"), "upscale to the crop", "median upscale factor", no_quality,
          "#dd8452", bins=20)
    _hist(axes[2, 0], _values(quality, "sharpness_median"), "face sharpness", "median sharpness", no_quality,
          "#55a868", bins=20)
    orientations: dict[str, int] = {}
    for numbers in quality:
        if "orientation" in numbers:
            orientations[str(numbers["orientation"])] = orientations.get(str(numbers["orientation"]), 0) + 1
    _bars(axes[2, 1], orientations, "head orientation per segment", "#8172b2", f"no data\n({no_quality})")
    no_sync = "no AV offset measured (sync off or not run)"
    offsets = _values(asd, "av_offset_frames")
    if offsets:
        low, high = int(min(offsets)) - 1, int(max(offsets)) + 1
        _hist(axes[3, 0], offsets, "audio-video offset", "offset (frames)", no_sync, "#937860",
              bins=np.arange(low, high + 1) + 0.5)
    else:
        _no_data(axes[3, 0], "audio-video offset", no_sync)
    _hist(axes[3, 1], _values(asd, "av_confidence"), "audio-video sync confidence", "confidence", no_sync, "#da8bc3",
          bins=20)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()


def asd_plot_png(plots: dict, threshold: float) -> bytes:
    """Speaking probability over time for each face segment of a source, with the kept runs shaded.

    ``plots``: the ASD result's ``details["plots"]`` (per segment key: start_s, fps, raw, smooth, runs).
    """
    keys = sorted(plots)
    fig, axes = plt.subplots(len(keys) or 1, 1, figsize=(9, 1.9 * max(1, len(keys))), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        data = plots[key]
        times = data["start_s"] + (np.arange(len(data["raw"])) + 0.5) / data["fps"]
        ax.plot(times, data["raw"], color="#999999", linewidth=0.8, label="per frame")
        ax.plot(times, data["smooth"], color="#4c72b0", linewidth=1.6, label="smoothed")
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8)
        for lo, hi in data["runs"]:
            ax.axvspan(times[lo], times[hi - 1], color="#55a868", alpha=0.2)
        ax.set_ylim(0, 1)
        ax.set_ylabel("P(speaking)")
        ax.set_title(key, fontsize=9)
    if not keys:
        axes[0, 0].text(0.5, 0.5, "no face segment scored", ha="center", va="center")
    axes[-1, 0].set_xlabel("source time (s); green: kept")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()


ROLE_COLOURS = {"speaking": "#4c72b0", "listening": "#55a868", "both": "#c44e52", "silent": "#d0d0d0"}


def role_timelines_png(rows: list[tuple[str, float, float, np.ndarray]], title: str) -> bytes:
    """One conversation session's role timelines: a row per actor sample, coloured by role per frame.

    ``rows``: (label, start on the session clock in s, fps, role codes per frame) per actor.
    """
    from pipelines.conversation.roles import runs
    from pipelines.schema.conversation import Role

    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.55 * max(1, len(rows))))
    for y, (label, start_s, fps, codes) in enumerate(rows):
        for role in Role:
            spans = [(start_s + lo / fps, (hi - lo) / fps) for lo, hi in runs(np.asarray(codes) == role)]
            ax.broken_barh(spans, (y - 0.35, 0.7), color=ROLE_COLOURS[role.name.lower()])
    if not rows:
        ax.text(0.5, 0.5, "no actor sample", ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks(range(len(rows)), [label for label, *_ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("session time (s)")
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in ROLE_COLOURS.values()]
    ax.legend(handles, list(ROLE_COLOURS), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()


def role_seconds_png(seconds: list[dict[str, float]]) -> bytes:
    """Conversation mode's QC panel: seconds per role over every actor sample, and how much of each
    sample is listening (the data speaking-only mode never keeps).

    ``seconds``: each actor sample's seconds per role (speaking, listening, both, silent).
    """
    fig, (totals_ax, share_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
    totals = {role: sum(s[role] for s in seconds) for role in ROLE_COLOURS}
    whole = sum(totals.values())
    if whole > 0:
        names = list(totals)
        totals_ax.barh(names, [totals[n] for n in names], color=[ROLE_COLOURS[n] for n in names])
        for y, name in enumerate(names):
            totals_ax.text(totals[name], y, f" {totals[name]:.1f} s ({100 * totals[name] / whole:.0f}%)",
                           va="center", fontsize=8)
        totals_ax.invert_yaxis()
        totals_ax.set_xlim(0, max(totals.values()) * 1.4)
        totals_ax.set_title(f"seconds per role over {len(seconds)} actor samples")
        totals_ax.set_xlabel("seconds")
        shares = [s["listening"] / total for s in seconds if (total := sum(s[r] for r in ROLE_COLOURS)) > 0]
        _hist(share_ax, shares, "listening share per actor sample", "listening / sample duration",
              "no actor sample", ROLE_COLOURS["listening"], bins=20, range=(0, 1))
        share_ax.set_ylabel("actor samples")
    else:
        _no_data(totals_ax, "seconds per role", "no actor sample paired")
        _no_data(share_ax, "listening share per actor sample", "no actor sample paired")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()
