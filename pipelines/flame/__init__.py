"""FLAME stage: per-frame FLAME parameters from SHeaP on 224 px head crops, then smoothing.

- ``groups``: the one table from SHeaP's published output names to our motion groups and metadata.
- ``sheap``: ``SheapBackend`` loads a SHeaP TorchScript checkpoint and runs batched inference.
- ``headcrop``: ``head_squares`` / ``crop_square`` cut the head crop SHeaP expects from the face
  boxes (SHeaP's video-demo crop rewritten in SCRFD box units, smoothed over time).
- ``smoothing``: ``savgol_groups`` Savitzky-Golay filters each group over time, rotations
  through sign-continuous quaternions so a rotation crossing +-pi does not tear.

No Dagster import here: every function is callable and testable alone.
"""
