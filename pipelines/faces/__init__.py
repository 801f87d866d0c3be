"""Face detection backends, IoU tracking and the square crop rule."""
