"""The completion engine: one per client, it finds the results of every pending inference.

- ``_engine.py``: :class:`CompletionEngine`, the registry of watches and directories; it
  chooses each directory's source, and turns completions into outcomes (the resolver).
- ``_polling.py``: the per-location polling source (one GET per location per round).
- ``_listing.py``: the listing source (one ListObjectsV2 page answers for 1,000 keys).
- ``_strategy.py``: the cost model that picks between them.
- ``_scheduler.py``: the engine's one task; runs every S3 request as a short job.
- ``_budget.py``: the client-wide cap on S3 requests per second.
- ``_clock.py``: time, sleep and timers, injectable for tests.
- ``_records.py``: what is kept per watch, per location and per directory.

Modules import from their siblings directly; this package imports nothing, so that the S3 and
retry layers can use the clock without an import cycle.
"""
