"""SQLite's durable single-writer commit rate on this disk, the anchor for
comfyshim's durable tag changes: WAL journal, synchronous=FULL, one row per
transaction, as its own documentation configures a durable WAL database.

usage: python3 bench/sqlite_anchor.py DIR SECONDS SCENARIO
prints one result line in the benchmark driver's JSON format.
"""
import json
import os
import sqlite3
import sys
import tempfile
import time

directory, seconds, scenario = sys.argv[1], float(sys.argv[2]), sys.argv[3]
fd, path = tempfile.mkstemp(dir=directory, suffix=".db")
os.close(fd)
try:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE tags (asset TEXT, tag TEXT, PRIMARY KEY (asset, tag))")
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?)", ("0b9e5f4c-1d2a-4c3b-8e7f-%012d" % n, "bench"))
        db.execute("COMMIT")
        n += 1
    elapsed = time.monotonic() - start
    db.close()
    print(json.dumps({"scenario": scenario, "target": "sqlite_wal_full", "metric": "mutations_per_s",
                      "unit": "1/s", "value": n / elapsed}, separators=(",", ":")))
finally:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
