"""The data contract between stages, shards and their readers.

Every file the pipeline writes for another component to read has one model here, with
``load`` and ``save``: the source record (``record.json``), a stage's per-source result
(``<stage>.json``), a sample's JSON inside the shards, and the shard index.
"""
