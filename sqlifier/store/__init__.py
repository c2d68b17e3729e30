"""The store: what sqlifier keeps on disk about what happened (SQLite, WAL).

Module by module:

    audit.py      the audit log: who did what, to what, when, why and how it ended;
                  append-only and hash-chained
    decisions.py  every decision of the rule engine with its reason and values
    history.py    every service's signals in 10 s buckets, for backtests
    slo.py        good and total requests per minute per objective, for 30-day windows
    files.py      damaged state files: the error that names them, kept aside
    enginefile.py the rules' state in engine.json, restored or (corrupt) set aside and said
"""
