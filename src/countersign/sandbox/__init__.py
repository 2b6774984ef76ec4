"""The sandbox: the content-trust scenario on loopback, replayed end to end.

``services`` starts and stops ``countersign serve`` and a registry as detached
processes whose state lives in one directory; ``image`` builds the sample image
from Debian packages; ``checks`` are the stage checks the demo's policy runs;
``demo`` replays the scenario step by step, each step checking its own outcome.
"""

from __future__ import annotations

from countersign.errors import CountersignError


class SandboxError(CountersignError):
    """The sandbox cannot be started, stopped or used as asked."""
