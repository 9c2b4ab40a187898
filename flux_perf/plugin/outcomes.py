"""The pytest outcomes of a case the run could not judge: each its own word, letter and colour
in the progress line and the final count, never a pass. Raised by the suite's own test files
(and a project's own GPU tests): `from flux_perf.plugin import Inconclusive`."""

from __future__ import annotations

import pytest


class Inconclusive(pytest.skip.Exception):
    """A case the run could not judge: its own outcome (`INCONCLUSIVE`, yellow), never a pass.
    --flux-strict turns it into a failure."""

    __module__ = "builtins"  # as pytest's own Skipped: reports show the reason, not flux_perf.plugin.Inconclusive
    outcome = "inconclusive"


class Disturbed(Inconclusive):
    """Timed rounds on a machine unlike the reference's: not judged (`DISTURBED`, yellow), never a
    pass nor a failure of the code; the same-machine A/B can judge it. --flux-strict fails it."""

    __module__ = "builtins"
    outcome = "disturbed"


class FidelityGap(Inconclusive):
    """Fidelity judged by the floor alone (no band, or no recorded fidelity): `GAP`, never a pass."""

    __module__ = "builtins"
    outcome = "gap"


# A case the run could not judge: its pytest outcome (a report's `flux_outcome`) and its progress letter.
NOT_JUDGED_LETTERS = {"inconclusive": "?", "disturbed": "D", "gap": "G"}
