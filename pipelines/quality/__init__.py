"""Per-frame face quality gates (size, sharpness, head orientation) on the face stage's clips."""
