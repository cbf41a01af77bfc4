"""The driver: one loop that feeds job outcomes to the searcher and turns its decisions into runs,
plus how runs are judged, how the driver session is held, ingest and checkpoint collection.
May import: searchers, executors, experiment, config, tasks, core."""
