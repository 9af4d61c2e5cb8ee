"""How a firing's run is held against the runs already active for its trigger or key.

The tick and `fire` both call `overlap_for`, so a run fired by hand is held
exactly as a scheduled one would be.
"""

from __future__ import annotations

import hashlib

from scheduler.core.vocabulary import OverlapPolicy, RunOverlap

OVERLAP_KEY_MAX = 256  # runs.overlap_key is String(256): longer row keys are hashed


def overlap_for(
    policy: str, trigger: str, firing_key: str | None, *, catchup: bool = False
) -> tuple[RunOverlap | None, str | None]:
    """(run.overlap, run.overlap_key) for a firing under the trigger's policy.

    Catch-up runs of one evaluation queue behind each other (`wait`); they are
    never skipped as overlapping one another.
    """
    if policy == OverlapPolicy.ALLOW:
        return None, None
    if policy == OverlapPolicy.PER_KEY:
        key = f"{trigger}:{firing_key or ''}"
        if len(key) > OVERLAP_KEY_MAX:  # the column's width, on every database
            digest = hashlib.sha256((firing_key or "").encode()).hexdigest()
            key = f"{trigger}:#{digest}"
        return RunOverlap.WAIT, key
    return (RunOverlap.WAIT if catchup else RunOverlap(policy)), trigger
