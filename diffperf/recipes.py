"""Recipes: composable optimization knobs.

A recipe is written as knob tokens joined by '+', e.g. "bf16+fuse-qkv+fbcache-0.3+compile".
Each knob (diffperf/knobs/registry.py) owns its Recipe fields and its token grammar, so the
fields, the parsing and the canonical name all come from the knob registry. Named recipes are just
canonical strings, so any combination can be asked for with --perf-recipes.
"""
from __future__ import annotations

from dataclasses import field, make_dataclass, replace
from typing import Any

from .errors import UsageError
from .knobs import registry


class _RecipeMethods:
    """What a Recipe says about itself; its fields are the knobs' (see `Recipe`)."""

    @property
    def name(self) -> str:
        return "+".join(self.tokens())

    def tokens(self) -> list[str]:
        return [t for t in (k.spell(self) for k in registry.KNOBS) if t is not None]

    @property
    def lossless(self) -> bool:
        """Whether this recipe should reproduce its dtype's eager image up to kernel rounding."""
        return all(k.lossless for k in registry.KNOBS if k.active(self))

    @property
    def reference(self) -> "Recipe":
        """The model's reference recipe for fidelity checks: same dtype, eager, nothing else."""
        return Recipe(dtype=self.dtype)

    def validate(self) -> None:
        for knob in registry.KNOBS:
            if knob.active(self) and (why := knob.conflict(self)):
                raise UsageError(f"recipe {self.name!r}: {why}")


# A frozen dataclass with one field per Recipe field a knob owns, in registry order
# (dataclasses.fields(Recipe) lists them).
Recipe = make_dataclass(
    "Recipe",
    [(f.name, Any, field(default=f.default)) for k in registry.KNOBS for f in k.fields],
    bases=(_RecipeMethods,), frozen=True,
    namespace={"__module__": __name__,
               "__doc__": "One combination of knobs; each field belongs to a knob of diffperf/knobs/registry.py."},
)


def valid_tokens() -> list[str]:
    return (sorted(t for k in registry.KNOBS for t in k.tokens())
            + [p for k in registry.KNOBS for p in k.patterns()])


def parse_recipe(text: str) -> Recipe:
    """Parse 'bf16+fuse-qkv+fbcache-0.3' into a Recipe; unknown tokens are a UsageError."""
    if not text or not text.strip():
        raise UsageError("empty recipe; valid knobs: " + ", ".join(valid_tokens()))
    recipe = Recipe()
    owner: dict[str, str] = {}  # a knob's first field -> the token that set it
    for token in text.strip().split("+"):
        for knob in registry.KNOBS:
            values = knob.parse(token, text)
            if values is not None:
                break
        else:
            raise UsageError(
                f"unknown recipe knob {token!r} in {text!r}; valid knobs: {', '.join(valid_tokens())}"
            )
        owned = knob.fields[0].name
        if owned in owner:
            raise UsageError(f"recipe {text!r}: {token!r} and {owner[owned]!r} both set {owned}")
        owner[owned] = token
        recipe = replace(recipe, **values)
    recipe.validate()
    return recipe
