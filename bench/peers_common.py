"""What every peers script shares: stderr logging, short error strings, and the results file
that `attn bench` reads (a JSON list, rewritten atomically after every entry, so that a crash
still leaves every finished entry behind)."""
import json
import os
import sys


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def short(e):
    s = f"{type(e).__name__}: {e}".replace("\n", " ")
    return s[:400]


class Results:
    """The JSON list at `path`: created empty at once, each `emit` appends and rewrites it."""

    def __init__(self, path):
        self.path = path
        self.entries = []
        with open(path, "w") as f:
            json.dump(self.entries, f)

    def emit(self, entry):
        self.entries.append(entry)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.entries, f, indent=1)
        os.replace(tmp, self.path)
