"""A name -> function registry (verl style), with lookup errors that list the valid names.

    ADVANTAGE_ESTIMATORS = Registry[AdvantageFn]("advantage estimator")

    @ADVANTAGE_ESTIMATORS.register("grpo")
    def grpo_advantages(rewards, group_ids): ...

    ADVANTAGE_ESTIMATORS.get("grpo")(rewards, group_ids)

A function may be registered under several names (aliases such as "k3" and "low_var_kl"); registering a
name twice is an error, so a plug-in cannot silently replace a built-in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast


class Registry[F: Callable[..., object]]:
    """A mapping of names to functions of one kind (`kind` names it in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._functions: dict[str, F] = {}

    def register[G: Callable[..., object]](self, *names: str) -> Callable[[G], G]:
        """Decorator: register the function under each of `names`; returns it unchanged (its own signature kept,
        so extra keyword arguments such as kl_k3's `max_value` stay visible to type checkers)."""
        if not names:
            raise ValueError(f"register a {self.kind} under at least one name")

        def decorator(function: G) -> G:
            for name in names:
                if name in self._functions:
                    raise ValueError(f"{self.kind} {name!r} is already registered ({self._functions[name]})")
                self._functions[name] = cast(F, function)
            return function

        return decorator

    def get(self, name: str) -> F:
        try:
            return self._functions[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; use one of: {', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._functions)

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)
