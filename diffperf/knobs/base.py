"""The shape every knob has.

A knob is one optimization a recipe can ask for (a dtype, an attention backend, a quantization, a
step cache, a compile, ...). It says:

- its recipe fields and token grammar (`fields`, `choices` or `parse` / `spell`): which tokens of a
  recipe string set it and how a recipe writes it back, so that recipe ids stay canonical;
- `lossless`: whether a recipe with it still reproduces its dtype's eager image up to kernel
  rounding (a recipe is lossless when every knob it has is);
- `order`: where it runs in the build (fused projections before quantization, caches and compile
  late, CUDA graphs last);
- `check(ctx)`: why it cannot apply here (a skip reason), or None; asked before anything is built;
- `apply(ctx)`: changes the loaded pipeline and returns what it did, recorded with the case's
  results under `knobs` (None when there is nothing to say);
- `call_context(ctx)`: optionally, a factory of a context manager entered around every pipeline
  call (an attention backend, inductor flags, a verification step counter).

Knobs are listed once, in diffperf/knobs/registry.py; recipe parsing and the build loop over them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Mapping

from .skip import CaseSkip

if TYPE_CHECKING:  # annotations only: recipes and the build import this module
    import torch

    from ..models import ModelSpec
    from ..options import PerfOptions


@dataclass(frozen=True)
class Field:
    """A Recipe field a knob owns; its default means the knob is not in the recipe."""
    name: str
    default: Any = None
    doc: str = ""


@dataclass
class KnobContext:
    """What a knob sees: the recipe, the model, the device; once the pipeline is loaded, the
    pipeline too (None while the recipe is checked)."""
    recipe: Any  # diffperf.recipes.Recipe
    spec: ModelSpec
    device: torch.device
    options: PerfOptions | None = None
    size: str | None = None  # the tier's size
    pipe: Any = None
    steps: int | None = None  # denoising steps of a generation at this size
    # the rows each Linear layer of a component multiplies in a generation (the build's probe,
    # see linear_rows.py): {qualified name: LinearRows}
    linear_rows: Callable[[str], Mapping[str, Any]] | None = None
    state: dict[str, Any] = field(default_factory=dict)  # a knob's own objects between apply and call_context

    @property
    def denoiser(self):
        return getattr(self.pipe, self.spec.denoiser)


class Knob:
    """Base of every knob: a knob spelled by one token per value of its one field (`choices`)
    needs only to say what it checks and does; a knob with a pattern (a cache threshold, a
    degree) overrides parse / spell / patterns."""
    name: str
    order: int
    lossless: bool = True
    fields: tuple[Field, ...] = ()
    choices: Mapping[str, Any] = {}  # token -> value of fields[0]

    # --- grammar
    def parse(self, token: str, text: str) -> dict[str, Any] | None:
        """The field values `token` sets, or None when the token is not this knob's; a token of
        this knob with a bad value raises UsageError naming the recipe `text`."""
        if token in self.choices:
            return {self.fields[0].name: self.choices[token]}
        return None

    def spell(self, recipe) -> str | None:
        """This knob's token in the canonical name of `recipe`, or None when the recipe lacks it."""
        if not self.choices:
            return None
        value = getattr(recipe, self.fields[0].name)
        for token, v in self.choices.items():
            if v == value:
                return token
        return None

    def active(self, recipe) -> bool:
        return self.spell(recipe) is not None

    def tokens(self) -> list[str]:
        """The fixed tokens of this knob (for the list of valid knobs in an error)."""
        return list(self.choices)

    def patterns(self) -> list[str]:
        """Token patterns, e.g. 'fbcache[-threshold]', for the list of valid knobs in an error."""
        return []

    def conflict(self, recipe) -> str | None:
        """Why `recipe` cannot have this knob together with its others, or None."""
        return None

    # --- behaviour
    def check(self, ctx: KnobContext) -> str | None:
        return None

    def apply(self, ctx: KnobContext) -> dict[str, Any] | None:
        return None

    def call_context(self, ctx: KnobContext) -> Callable[[], ContextManager] | None:
        return None

    def __repr__(self) -> str:
        return f"<knob {self.name} order={self.order}>"


def skip_reason(check: Callable[..., None], *args) -> str | None:
    """The reason a check written to raise CaseSkip gives, or None when it passes."""
    try:
        check(*args)
    except CaseSkip as e:
        return str(e)
    return None
