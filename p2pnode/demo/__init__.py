"""The demo: the whole system on loopback in one process (``p2pnode demo``, ``scripts/demo``).

Above the runtime and below the CLI: ``walkthrough`` runs the steps and says
what happened; ``directory``, ``enumdns`` and ``supernode`` are the scenarios.
"""
