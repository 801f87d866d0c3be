"""What a conversation-mode sample holds beyond a speaking-only one (GDPO-Listener's dyadic data).

In conversation mode every tracked participant of a session is an *actor*: one sample covers
their continuous track, and the other participant is the *partner*. Beside the members every
sample has (``mp4``, ``wav``, ``json``, ``flame.npz``, ...), a conversation sample carries

- ``role.npy``: int8 (frames,), one code per 24 fps output frame of the actor's clip, a bit
  set: bit 0 the actor speaks, bit 1 another participant speaks (:class:`Role`);
- ``partner.wav``: the partner's audio over the same time span, PCM16 mono at the actor's rate,
  as many samples as the actor's ``wav``;
- ``partner.flame.npz``: the partner's FLAME arrays on the actor's frame grid (same names as
  ``flame.npz``: ``smooth/<group>``, ``raw/<group>``), plus ``tracked``: bool (frames,), True
  where the partner's face was tracked; untracked frames hold zeros. Absent when the partner's
  face was never tracked (an off-screen voice).

and the record's ``conversation`` section (:class:`ConversationInfo`) says who is who and how
each audio stream was obtained: a participant's own microphone, or a mixed track masked by who
speaks, which is not the same thing and must not be mistaken for it.

A speaking-only sample has none of these; a reader treats it as all frames ``SPEAKING`` with no
partner (the trainers mask the partner's part of the conditioning).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

import numpy as np
from pydantic import Field

from pipelines.schema.base import StrictModel

ROLE_MEMBER = "role.npy"
PARTNER_AUDIO_MEMBER = "partner.wav"
PARTNER_FLAME_MEMBER = "partner.flame.npz"
PARTNER_TRACKED_ARRAY = "tracked"  # the bool mask inside partner.flame.npz
CONVERSATION_MEMBERS = (ROLE_MEMBER, PARTNER_AUDIO_MEMBER, PARTNER_FLAME_MEMBER)


class Role(IntEnum):
    """Role of the actor in one frame: bit 0 the actor speaks, bit 1 someone else speaks."""

    SILENT = 0
    SPEAKING = 1
    LISTENING = 2
    BOTH = 3


ROLE_NAMES = {role: role.name.lower() for role in Role}


def role_codes(actor_speaks: np.ndarray, other_speaks: np.ndarray) -> np.ndarray:
    """int8 (frames,) role codes from two bool (frames,) arrays."""
    actor, other = np.asarray(actor_speaks, dtype=bool), np.asarray(other_speaks, dtype=bool)
    if actor.shape != other.shape or actor.ndim != 1:
        raise ValueError(f"role inputs must be two 1-D arrays of one length, got {actor.shape} and {other.shape}")
    return (actor.astype(np.int8) | (other.astype(np.int8) << 1)).astype(np.int8)


def actor_speaks(codes):
    """True where the actor speaks (SPEAKING or BOTH): bit 0 of numpy or torch role codes."""
    return (codes & int(Role.SPEAKING)) != 0


def actor_listens(codes):
    """True where the actor only listens (LISTENING: someone else speaks, the actor does not)."""
    return codes == int(Role.LISTENING)


def check_roles(codes: np.ndarray, frames: int, label: str = ROLE_MEMBER) -> np.ndarray:
    """``codes`` as int8 (frames,), or ValueError saying what is wrong with them."""
    codes = np.asarray(codes)
    if codes.shape != (frames,):
        raise ValueError(f"{label}: shape {codes.shape}, expected ({frames},) (one role per output frame)")
    if codes.dtype.kind not in "iu" or codes.size and (codes.min() < 0 or codes.max() > max(Role)):
        raise ValueError(f"{label}: role codes must be integers in 0..{max(Role)} ({', '.join(ROLE_NAMES.values())})")
    return codes.astype(np.int8, copy=False)


AudioDerivation = Literal["own_microphone", "mix_masked_by_speaker", "mix"]


class RoleSeconds(StrictModel):
    speaking: float
    listening: float
    both: float
    silent: float


class ConversationInfo(StrictModel):
    """The pairing of one conversation sample and how its streams were made."""

    session: str = Field(description="Session id: one two-shot video, or the files one session sidecar names.")
    input: Literal["shared_video", "per_participant"] = Field(
        description="One video with every participant and one mixed track, or one video + microphone each.")
    actor: str = Field(description="Participant id of the face this sample follows.")
    partner: str | None = Field(description="Participant id of the partner; none when nobody else was found.")
    partner_key: str | None = Field(None, description="Sample key of the partner's own sample, when it has one.")
    actor_audio: AudioDerivation = Field(description="How the sample's wav was obtained.")
    partner_audio: AudioDerivation | None = Field(description="How partner.wav was obtained; none when there is no partner.wav. A shared video "
        "always has one: off-screen voices are the partner's audio even when no partner face was tracked.")
    partner_flame_frames: int = Field(0, ge=0, description="Frames where partner.flame.npz holds a tracked face.")
    role_seconds: RoleSeconds
    role_source: str = Field(description="What decided the roles, e.g. 'light_asd+speech_activity'.")
