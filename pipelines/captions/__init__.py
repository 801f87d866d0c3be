"""Captions: describe each 200-frame window of a clip's face crop in one sentence.

Stage library only (no Dagster imports):

- ``instruction``: the versioned captioning instruction and the rule checker for answers.
- ``backends``: captioners (a local Qwen-VL checkpoint, or an OpenAI-compatible
  chat-completions server) behind one small ``Captioner`` protocol.
- ``windows``: 200-frame windows and the 8 frames sampled from each.
- ``cache``: answers cached per (clip content, window, model, instruction version).
- ``describe``: window loop with cache, rule check, one corrective retry, then flagging.
"""
