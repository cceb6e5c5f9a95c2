"""From a request's model names to an ordered list of candidates.

The order is the contract with the client: the first alias's targets (as its
strategy orders them), then that alias's fallback aliases (depth first), then
the next name in the request's ``models`` list, and so on.  A target reached
twice is tried once.
"""

from __future__ import annotations

from dataclasses import dataclass

from providers import ADAPTERS
from router.config import Alias, RouteTable, Target
from router.errors import InvalidRequest, UnknownModel
from router.request import ClientRequest


@dataclass(frozen=True, slots=True)
class Candidate:
    alias: Alias
    target: Target  # for wildcard aliases, with the caller's model filled in

    @property
    def label(self) -> str:
        return f"{self.alias.name} -> {self.target.provider.name}/{self.target.model}"


@dataclass(slots=True)
class Skip:
    label: str
    reason: str


def _unknown(table: RouteTable, name: str) -> UnknownModel:
    known = sorted(table.aliases) + [a.name for a in table.wildcards]
    return UnknownModel(f"unknown model {name!r}; this gateway serves: {', '.join(known)}", param="model")


def resolve_candidates(table: RouteTable, req: ClientRequest) -> tuple[list[Candidate], list[Skip]]:
    candidates: list[Candidate] = []
    skipped: list[Skip] = []
    seen_aliases: set[str] = set()
    seen_targets: set[str] = set()

    def visit(alias: Alias, requested: str) -> None:
        if alias.name in seen_aliases:
            return
        seen_aliases.add(alias.name)
        if req.op not in alias.operations:
            skipped.append(Skip(alias.name, f"does not serve {req.op.value}"))
        else:
            prefix = alias.wildcard_prefix
            for target in alias.targets:
                if prefix is not None:
                    target = target.for_model(requested, prefix)
                if target.key in seen_targets:
                    continue
                seen_targets.add(target.key)
                adapter = ADAPTERS[target.provider.kind].configured(target.provider.options)
                native = req.door in adapter.native_doors  # takes the client's body as it came
                if req.native_only is not None and not native:
                    skipped.append(Skip(f"{alias.name} -> {target.key}", f"does not speak the {req.door} API itself ({req.native_only.param})"))
                    continue
                bad = None if native else adapter.capabilities.unsupported_param(req.body)
                if bad is not None:
                    skipped.append(Skip(f"{alias.name} -> {target.key}", f"unsupported parameter {bad}"))
                    continue
                candidates.append(Candidate(alias, target))
        for fallback in alias.fallbacks:
            fallback_alias = table.aliases.get(fallback) or table.lookup(fallback)
            if fallback_alias is not None:
                visit(fallback_alias, fallback)

    for name in req.models:
        alias = table.lookup(name)
        if alias is None:
            raise _unknown(table, name)
        visit(alias, name)

    if not candidates and req.native_only is not None:
        raise req.native_only
    if not candidates:
        reasons = "; ".join(f"{s.label}: {s.reason}" for s in skipped) or "no targets"
        param = next((s.reason.rsplit(" ", 1)[-1] for s in skipped if s.reason.startswith("unsupported parameter")), None)
        raise InvalidRequest(f"no route can serve this request ({reasons})", param=param, code="no_eligible_target")
    return candidates, skipped
