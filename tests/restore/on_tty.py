#!/usr/bin/env python3
"""Runs a command with its stderr on a pseudo-terminal, and saves what it wrote there.

usage: on_tty.py OUTPUT COMMAND [ARG...]

The command's stdin and stdout are this script's own; only stderr is the terminal, so a
program that shows progress on a terminal shows it. What arrives on the terminal is written to
OUTPUT. Exits with the command's exit code (128+N when a signal N ended it).
"""

import os
import subprocess
import sys


def main():
    output, command = sys.argv[1], sys.argv[2:]
    master, slave = os.openpty()
    proc = subprocess.Popen(command, stderr=slave)
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            # EIO: every process holding the terminal has closed it.
            break
        if not chunk:
            break
        seen += chunk
    code = proc.wait()
    with open(output, "wb") as out:
        out.write(seen)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
