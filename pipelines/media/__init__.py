"""Media IO, one concern per module: ``decode`` (probe and the one decode pass of a source,
clip frames), ``encode`` (the clip encoder and final mux), ``wav`` (every WAV read and write).

Nothing is re-exported here: importers name the submodule, so each import says what it uses.
"""
