"""Drive `grpcmesh top` through a pseudo-terminal (pexpect), for tests/integration/test_top.py:
python -m tests.integration.top_pty ADMIN q|ctrl-c. Waits for the Echo/Unary row with a
non-zero rate, presses the key, and prints one JSON line: what top drew (escapes dropped), the
rate, its exit status, how long it took to exit, and the terminal's local modes it left."""
from __future__ import annotations

import json
import os
import re
import sys
import termios
import time
from typing import Any

import pexpect

# The method's row: its name, then calls/s (rich pads cells with spaces).
RATE = re.compile(rb"Echo/Unary\s+(\d+\.\d)\s+(\d+\.\d+)%")


def drive(admin: str, key: str) -> dict[str, Any]:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    child = pexpect.spawn(sys.executable, ["-m", "grpcmesh", "top", "--admin", admin],
                          env=env, dimensions=(40, 160), timeout=15)
    try:
        child.expect("collecting")
        deadline = time.monotonic() + 15
        while True:
            child.expect(RATE, timeout=max(0.1, deadline - time.monotonic()))
            assert child.match is not None
            rate = float(child.match.group(1))
            if rate > 0:
                break
        seen = child.before + child.after
        if key == "q":
            child.send("q")
        else:
            child.sendintr()  # Ctrl-C: SIGINT from the terminal
        quit_at = time.monotonic()
        child.expect(pexpect.EOF, timeout=5)
        took = time.monotonic() - quit_at
        # The pseudo-terminal's modes, read from its master side once top is gone.
        lflag = termios.tcgetattr(child.child_fd)[3]
        child.close()
        return {"seen": re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", seen).decode(errors="replace"),
                "rate": rate, "status": child.exitstatus, "took": took, "lflag": lflag}
    finally:
        if child.isalive():
            child.terminate(force=True)


if __name__ == "__main__":
    print(json.dumps(drive(sys.argv[1], sys.argv[2])))
