"""The method registry: every strategy and every RL estimator is declared once, here, by a decorator.

A *strategy* (``strategy.name``) is a test-time procedure (pass@N, majority vote, best-of-N) and its CAT
objective; a class registers itself with ``@register_strategy("pass_at_n")``. An *estimator*
(``strategy.estimator``) is how RL turns one prompt's rollouts into per-rollout advantages for that
strategy's target: ``surrogate`` (every strategy) is CAT itself, the trainer's group-normalised advantage
times the strategy's weight; every other estimator REPLACES that advantage and registers a function
``fn(group, k) -> advantages [M]`` with ``@register_estimator(name, strategies=(...), ...)``, in the module
that implements it (one module per method). ``build_strategy`` (strategies/__init__.py), config validation
(config.validate) and the trainer (training/rl.py) read this registry; none of them names a method.

Pure Python: no torch, no trainer imports (the functions registered here import what they need).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SURROGATE = "surrogate"


@dataclass(frozen=True)
class EstimatorSpec:
    """What one estimator of one strategy is and needs.

    name: the value of strategy.estimator; strategy: the strategy it belongs to;
    fn: (Group, k) -> float64 advantages of the group's M rollouts (None for the surrogate, which weights the
      trainer's advantages instead of replacing them);
    target: what its expected update is the gradient of (documentation and logs), e.g. "pass@k";
    min_k: the smallest k = strategy.n it is defined for; max_k_is_rollouts: k may not exceed the rollouts per
    prompt (objective.num_generations); k_schedule: it accepts strategy.k_schedule (a k annealed over training);
    needs_vote_keys: it reads the rollouts' answer keys; paper: where the formula comes from.
    """

    name: str
    strategy: str
    fn: Callable[..., Any] | None = None
    target: str = ""
    min_k: int = 1
    max_k_is_rollouts: bool = True
    k_below_rollouts: bool = False  # k = M is degenerate (every rollout's advantage is 0): needs k < M
    k_schedule: bool = False
    needs_vote_keys: bool = False
    paper: str = ""

    @property
    def replaces_advantages(self) -> bool:
        return self.fn is not None


@dataclass
class _Registry:
    strategies: dict[str, type] = field(default_factory=dict)
    estimators: dict[str, dict[str, EstimatorSpec]] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)


REGISTRY = _Registry()


def register_strategy(name: str, order: int = 100):
    """Class decorator: the class is strategy.name = ``name``; it gets the surrogate estimator (CAT). ``order``
    places it in listings (strategy_names)."""

    def deco(cls):
        if name in REGISTRY.strategies and REGISTRY.strategies[name] is not cls:
            raise ValueError(f"strategy {name!r} is registered twice")
        cls.name = name
        REGISTRY.strategies[name] = cls
        REGISTRY.order[name] = order
        REGISTRY.estimators.setdefault(name, {})[SURROGATE] = EstimatorSpec(
            SURROGATE, name, None, target=f"CAT: the strategy's success S(p) ({cls.__name__})",
            max_k_is_rollouts=False, paper="Ousherovitch & Tewari 2026, arXiv 2604.24957")
        return cls

    return deco


def register_estimator(name: str, strategies: tuple[str, ...], *, target: str, min_k: int = 1,
                       k_schedule: bool = False, needs_vote_keys: bool = False, paper: str = "",
                       k_below_rollouts: bool = False):
    """Function decorator: ``fn(group, k)`` is strategy.estimator = ``name`` for each of ``strategies``.
    The strategies need not be registered yet (modules import in any order)."""
    if name == SURROGATE:
        raise ValueError("the surrogate estimator is CAT itself; every strategy has it")

    def deco(fn):
        for s in strategies:
            table = REGISTRY.estimators.setdefault(s, {})
            if name in table and table[name].fn is not fn:
                raise ValueError(f"estimator {name!r} of strategy {s!r} is registered twice")
            table[name] = EstimatorSpec(name, s, fn, target=target, min_k=min_k, k_schedule=k_schedule,
                                        needs_vote_keys=needs_vote_keys, paper=paper,
                                        k_below_rollouts=k_below_rollouts)
        return fn

    return deco


def strategy_names() -> tuple[str, ...]:
    return tuple(sorted(REGISTRY.strategies, key=lambda s: (REGISTRY.order[s], s)))


def strategy_class(name: str) -> type:
    if name not in REGISTRY.strategies:
        raise ValueError(f"unknown strategy.name={name!r}; choose one of {', '.join(strategy_names())}")
    return REGISTRY.strategies[name]


def estimator_names(strategy: str) -> tuple[str, ...]:
    """The estimators of one strategy, surrogate first."""
    names = list(REGISTRY.estimators.get(strategy, {}))
    return tuple(sorted(names, key=lambda n: (n != SURROGATE, n)))


def strategies_with(estimator: str) -> tuple[str, ...]:
    return tuple(s for s, table in REGISTRY.estimators.items() if estimator in table and s in REGISTRY.strategies)


def estimator_spec(strategy: str, estimator: str | None) -> EstimatorSpec:
    """The spec of strategy.estimator for one strategy; a ValueError naming the key and the valid values."""
    estimator = estimator or SURROGATE
    table = REGISTRY.estimators.get(strategy, {})
    if estimator not in table:
        others = [s for s in strategies_with(estimator) if s != strategy]
        where = f"; {estimator} is an estimator of {', '.join(others)}" if others else ""
        raise ValueError(f"strategy.estimator={estimator!r}: not an estimator of strategy {strategy}; choose one of "
                         f"{', '.join(estimator_names(strategy))}{where}")
    return table[estimator]


def check_estimator_config(strategy_cfg: Any, objective_cfg: Any) -> tuple[str, Any, str] | None:
    """The first problem of strategy.estimator / strategy.k_schedule in a config, as (key, value, why), or None:
    the estimator belongs to the strategy, an RL estimator needs objective=rl, and k (strategy.n, or each end of
    strategy.k_schedule) lies in [the estimator's minimum, objective.num_generations]. config.validate raises it."""
    s, o = strategy_cfg, objective_cfg
    estimator = s.estimator or SURROGATE
    try:
        spec = estimator_spec(s.name, estimator)
    except ValueError as err:
        return "strategy.estimator", estimator, str(err).removeprefix(f"strategy.estimator={estimator!r}: ")
    schedule = s.get("k_schedule") if hasattr(s, "get") else getattr(s, "k_schedule", None)
    if schedule is not None:
        if not spec.k_schedule:
            return ("strategy.k_schedule", list(schedule), f"a k schedule is for strategy.estimator=pkpo, not "
                    f"{estimator}; set strategy.k_schedule=null")
        if len(schedule) != 2:
            return "strategy.k_schedule", list(schedule), "give [k_start, k_end]"
    if not spec.replaces_advantages:
        return None
    if o.name != "rl":
        return ("strategy.estimator", estimator, f"{estimator} is an RL estimator: it needs rollouts (objective=rl); "
                "SFT trains the surrogate S(p), set strategy.estimator=surrogate")
    ks = [int(s.n)] if schedule is None else [int(k) for k in schedule]
    if min(ks) < spec.min_k:
        key, value = ("strategy.n", s.n) if schedule is None else ("strategy.k_schedule", list(schedule))
        return key, value, f"strategy.estimator={estimator} needs k >= {spec.min_k}"
    if spec.max_k_is_rollouts and o.num_generations < max(ks):
        what = f"strategy.n = {s.n}" if schedule is None else f"max(strategy.k_schedule) = {max(ks)}"
        return ("objective.num_generations", o.num_generations,
                f"strategy.estimator={estimator} uses k-subsets of a prompt's rollouts: needs at least {what} "
                "rollouts per prompt (raise objective.num_generations or lower strategy.n)")
    if spec.k_below_rollouts and o.num_generations <= max(ks):
        return ("strategy.n", s.n, f"strategy.estimator={estimator} with k = {max(ks)} of {o.num_generations} rollouts "
                "gives every rollout a zero advantage (each k-subset is the whole group): use k < "
                "objective.num_generations")
    return None
