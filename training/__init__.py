"""Trainers that read the pipeline's WebDataset shards and learn FLAME motion from audio and captions.

Three stages, each one run folder (config.yaml, stats.json, log.jsonl, checkpoints/):

- ``kind: vae``: a motion VAE that compresses windows of FLAME parameters to latents
  (training/vae.py), with normalisation statistics computed from the shards;
- ``kind: flow``: an auto-regressive rectified-flow transformer on those latents, conditioned on
  frozen audio (wav2vec2-family) and caption (T5-family) encoders and, in conversations, on the
  partner's audio and motion latents, with classifier-free guidance weighted by the actor's
  role per frame (training/flow.py);
- ``kind: rl``: RL post-training of the flow model with group-relative advantages from SDE
  rollouts (training/rl.py, Flow-GRPO / GDPO), by default on listening frames only
  (``rl.listener_only``, GDPO-Listener).

Speaking-only shards (FlowPortrait) and conversation shards (GDPO-Listener; the members in
pipelines/schema/conversation.py) go through the same loader and models: a speaking-only sample
is all speaking, without partner.

Entry points: ``python -m training train {sft,rl,evaluate,generate,convert-flame}``
(training/cli.py, also the ``train`` group of the ``talkinghead`` command; ``generate`` turns
audio into a FLAME sequence, training/generate.py), ``python -m training.sft`` / ``training.rl``
for ``accelerate launch -m`` (several GPUs), and the Dagster job in assets/training.py.
Configs: training/configs/ (validated by training/config.py). Frame rate and sample rate come
from the samples' records, never from constants here (training/data.py).
"""
