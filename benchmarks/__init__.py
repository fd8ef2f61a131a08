"""Benchmarks of eventvault against its peer and its limit (DESIGN.md §10, docs/benchmarks.md).

The peer is the ``eventsourcing`` library (9.5.6), configured as its documentation
shows; the limit is the raw driver (``sqlite3``, ``psycopg``) doing the same inserts
and selects on the same schema at the same durability. All three run in one run;
the ratios between them are the result. ``python -m benchmarks --help``.
"""
