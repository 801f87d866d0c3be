"""Dagster glue: Definitions, thin assets per stage group, resources, partitions, sensors, checks.

Each asset reads its inputs, calls one stage from ``pipelines`` and records metadata.
"""
