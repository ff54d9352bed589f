"""The exception a knob raises when it cannot apply to a model or to this machine."""


class CaseSkip(Exception):
    """The case cannot run here; the message says why. Tests turn it into pytest.skip."""
