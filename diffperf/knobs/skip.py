"""The exception a knob raises when it cannot apply to a model or to this machine."""


class CaseSkip(Exception):
    """The case cannot run here; the message says why. Tests turn it into pytest.skip."""


class NothingToMeasure(CaseSkip):
    """The case cannot run because something it is to be measured with is absent (pretrained weights
    not on this machine): not a property of the case, so the run counts it as not judged (and
    --perf-require-baselines fails it) instead of a plain skip."""
