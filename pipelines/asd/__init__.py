"""Active speaker detection: the Light-ASD audio-visual network, its input features and a windowed scorer."""
