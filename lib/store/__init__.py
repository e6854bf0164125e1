"""The store: SQLite engine and write transactions (`engine`), a read without SQLAlchemy for the CLI's first
decisions (`peek`), column helpers (`columns`), the core entities
(datasets, cases, model configs, runs, outputs, comparisons, stored checks, the audit chain: `entities`), the
stored per-output check results (`check_store`), the hash-chained audit log (`audit`) and what an older store
file gets when it is opened (`migrate`: added columns, credentials stripped from stored URLs and errors).

Entity modules of other domains (drift, judge, governance, release) import only `columns`; `engine` registers
them all before creating tables, so nothing here imports back."""
