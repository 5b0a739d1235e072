"""The NFQUEUE delay program: it lives in ``p2pnode.lab.delay`` (``python -m p2pnode.lab.delay``).

Kept so ``python tests/harness/lab_delay.py QUEUE_NUM DELAY_MS [JITTER_MS] [SEED]`` still works.
"""

from __future__ import annotations

import sys

from p2pnode.lab.delay import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
