"""Speech analysis: who speaks when, what is said, in which language, and the filter rules.

Backends sit behind three small protocols (``base.py``): speaker activity (voice activity,
overlap, turns), transcription (text with word times) and language identification.
"""
