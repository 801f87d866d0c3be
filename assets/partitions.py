"""One dynamic partition per registered source video."""

import dagster as dg

SOURCE_PARTITIONS_NAME = "source_videos"
source_partitions = dg.DynamicPartitionsDefinition(name=SOURCE_PARTITIONS_NAME)

# Asset groups materialised once per source partition, in graph order.
PER_SOURCE_GROUPS = ("ingest", "faces", "asd", "speech", "annotate")
