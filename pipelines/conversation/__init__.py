"""Conversation mode (GDPO-Listener): every tracked participant is an actor with a role per frame."""
