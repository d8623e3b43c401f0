"""Models for the fault tests of Python replicas: each misbehaves in one way."""

import os
import sys
import time


class Printer:
    """Prints a line that is not UTF-8, then a normal one, on every request."""

    def __init__(self, name):
        self.name = name
        self.ready = True

    def predict(self, payload, headers=None):
        sys.stdout.buffer.write(b"not utf-8: \xff\xfe\n")
        sys.stdout.flush()
        print(f"printer line {payload.get('n')}", flush=True)
        return {"pid": os.getpid()}


class SlowLoad:
    """`load()` takes `FS_TEST_LOAD_S` seconds and writes its pid to FS_TEST_PID_DIR first."""

    def __init__(self, name):
        self.name = name

    def load(self):
        directory = os.environ["FS_TEST_PID_DIR"]
        with open(os.path.join(directory, str(os.getpid())), "w") as f:
            f.write("")
        time.sleep(float(os.environ.get("FS_TEST_LOAD_S", "30")))
        self.ready = True

    def predict(self, payload, headers=None):
        return {"pid": os.getpid()}
