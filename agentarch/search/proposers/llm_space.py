"""The in-space LLM proposer: a model chooses architectures of a declared search space, one JSON object at a time.

A model too small to write a whole module (the candidate contract) can still search: it is shown the space's
grammar (`SearchSpace.grammar`, its fields and their values), the best and the latest architectures of this search
with their scores (as quoted data: canonical architecture strings, re-validated, at most `best` + `latest` lines),
and asked for one architecture as a JSON object of the space's fields. The request carries the space's JSON schema
(`SearchSpace.schema`) as OpenAI's `response_format`, which vLLM's guided decoding, llama.cpp's grammars and
tests/real_model.py's token trie enforce, so even a 135M model answers validly. The host validates every answer
against the space either way (`SearchSpace.read_answer`: the JSON object, or an architecture string in the space's
grammar); an answer that is not an architecture of the space, or no answer at all (the call failed), still counts
as a query, is recorded in the proposer's `stats` with its reason, and that query takes a uniform sample of the
space instead, so every proposer of a comparison spends the same number of queries. A valid answer this search
already proposed (evaluated, or being evaluated) is a repeat: the model is asked `reask` more times, told what it
repeated, and then the query takes a sample the search has not proposed, also counted. So the proposer never
spends a query on a cell it already has, on a table (where the baselines may repeat) as in a trained search.
With `initial` > 0 the search starts from that many uniform samples (as REA's population), then asks the model.
Given `limits` (agentarch.search.limits: the task's max_params), the prompt states them with each shown
architecture's parameters, an answer over them falls back as an invalid one does (counted as `over_limits`), and
every sample is drawn inside them.

The proposer implements the same ask/tell interface as random search, REA and TPE (`propose`, `observe`,
`withdraw`, `replay`), so a table search, a trained search and the agent loop run it alike. Its name, `llm-space`,
is what the archive's `proposer` column records for its candidates.

In the agent loop (`agentarch run --propose-in SPACE`) each proposal runs a search of one query, rebuilt from the
archive's candidates of the space, whose `claim` keeps two proposals in flight from taking one architecture; the
loop reads the search's `exchanges` (each call's messages, answer and ledger ids) to record them with the candidate.

`InSpaceModel` is the model a search asks: an LLM client (agentarch.llm.client.LLMClient, or any object with its
`complete(messages, purpose, tag=...)`) plus the searches' stats. LLMClient sends no `response_format` of its own;
until `complete` takes one, the model hands the client's attempt a litellm that adds it (`_Formatted`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

import agentarch.prompt_templates
from agentarch.errors import UsageError
from agentarch.llm.faults import LLMCancelled, LLMError
from agentarch.search.limits import Limits
from agentarch.search.proposers.base import (
    IN_SPACE,
    MAX_REDRAWS,
    Distinct,
    Observation,
    Proposal,
    Proposer,
    SpaceExhausted,
)
from agentarch.search.spaces import SearchSpace, SpaceError
from agentarch.store import ranking
from agentarch.store.ranking import Direction

if TYPE_CHECKING:
    from agentarch.config import Settings
    from agentarch.store.archive import Archive
    from agentarch.tasks.task import Task

ALIASES = {"llm": IN_SPACE}
"""Other names `--algo` accepts for it."""
PURPOSE = "propose-in-space"
"""The purpose of its calls in the `llm_calls` ledger."""
TEMPLATE = "propose_in_space.j2"
PROMPTS_DIR = Path(agentarch.prompt_templates.__file__).resolve().parent
MAX_ARCH_CHARS = 400
"""The longest architecture a prompt quotes (canonical strings of the shipped spaces are at most ~110)."""
INITIAL = "initial population: uniform sample"
"""The note of the proposer's `initial` uniform samples, made before it asks the model (as REA's population)."""
SEARCH = {"best": 5, "latest": 5, "initial": 0, "reask": 1}
"""How a search asks, by default: see `InSpaceLLM`'s arguments."""
MAX_REASONS = 20
"""How many reasons for fallbacks the stats keep word for word (all are counted)."""


def canonical_algo(algo: str) -> str:
    """`algo` with its alias resolved (`llm` is `llm-space`)."""
    return ALIASES.get(algo, algo)


@dataclass
class InSpaceStats:
    """What one search's queries came to. `queries` are proposals made; `initial` of them uniform samples before the
    model was asked; the rest asked the model (`asks` calls, more than one where it repeated itself). Each call
    ended in a valid answer (an architecture of the space; `repeats` of them already proposed), an invalid answer,
    or no answer (the call failed); `over_limits` of the valid answers broke the task's limits. `fallbacks` counts
    the queries that took a uniform sample instead of an answer (an invalid or missing one, one over the limits, or a
    repeat after its re-asks); `reasons` holds the first `MAX_REASONS` reasons word for word, `reason_counts` all by
    kind, and `outcomes` each query's: answer, initial, or the fallback's kind."""

    seed: int | None = None
    queries: int = 0
    initial: int = 0
    asks: int = 0
    valid: int = 0
    invalid: int = 0
    no_answer: int = 0
    repeats: int = 0
    over_limits: int = 0
    fallbacks: int = 0
    schema_sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)
    reason_counts: dict[str, int] = field(default_factory=dict)
    outcomes: list[str] = field(default_factory=list)  # per query: answer, initial, or the fallback's kind

    @property
    def valid_rate(self) -> float | None:
        """Valid answers per call to the model (a failed call counts as not valid)."""
        return self.valid / self.asks if self.asks else None

    def fell_back(self, kind: str, reason: str) -> None:
        self.outcomes.append(kind)
        self.fallbacks += 1
        self.reason_counts[kind] = self.reason_counts.get(kind, 0) + 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"query {self.queries}: {reason}"[:500])

    def report(self) -> dict[str, Any]:
        return {**asdict(self), "llm_seconds": round(self.llm_seconds, 2), "valid_rate": self.valid_rate}


class _Formatted:
    """A litellm that adds `response_format` to every completion it is asked for (and is litellm otherwise)."""

    def __init__(self, lite: Any, response_format: dict[str, Any]) -> None:
        self._lite, self._format = lite, response_format

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        return self._lite.completion(*args, **{**kwargs, "response_format": self._format})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lite, name)


class InSpaceModel:
    """The model in-space searches ask, and what their queries came to (`searches`, one `InSpaceStats` each).

    `client` is an LLMClient (or any object with its `complete`); `task` is what the prompt names (None: the
    searches say only the space); `schema` False sends no `response_format` (a server that refuses one is also
    asked without it from then on, and the stats say so). The rest is how its searches ask (`InSpaceLLM`'s
    arguments of the same names)."""

    def __init__(
        self,
        client: Any,
        task: Task | None = None,
        *,
        schema: bool = True,
        best: int = SEARCH["best"],
        latest: int = SEARCH["latest"],
        initial: int = SEARCH["initial"],
        reask: int = SEARCH["reask"],
    ) -> None:
        self.client = client
        self.task = task
        self.search = {"best": best, "latest": latest, "initial": initial, "reask": reask}
        self.send_schema = schema
        self.schema_refused: str | None = None
        self.searches: list[InSpaceStats] = []
        self._format = threading.local()
        self._formatted = self._formatting(client) if schema else None

    def _formatting(self, client: Any) -> Any:
        """A client whose requests carry this thread's `response_format`: the client itself when its `complete`
        takes one, else a copy whose attempts get a litellm that adds it; None when neither is possible."""
        if "response_format" in inspect.signature(client.complete).parameters:
            return client
        attempt = getattr(type(client), "_attempt", None)
        if attempt is None:
            return None
        formatted = copy.copy(client)
        formatted._attempt = functools.partial(self._attempt, attempt, formatted)
        return formatted

    def _attempt(self, attempt: Any, client: Any, lite: Any, *args: Any, **kwargs: Any) -> Any:
        return attempt(client, _Formatted(lite, self._format.value), *args, **kwargs)

    def bind(self, archive: Archive | None, run_id: str | None) -> InSpaceModel:
        """Ledger the calls in `archive` under `run_id` from now on (the run is opened after the model is made)."""
        for client in {id(c): c for c in (self.client, self._formatted) if c is not None}.values():
            client.archive, client.run_id = archive, run_id
        return self

    def line(self) -> str:
        """The searches' stats in one line, for a terminal."""
        r = self.report()
        rate = "n/a" if r["valid_rate"] is None else f"{r['valid_rate']:.0%}"
        refused = f"; the server refused the schema ({r['schema_refused']})" if r["schema_refused"] else ""
        over = f", {r['over_limits']} over the limits" if r["over_limits"] else ""
        return (
            f"{self.name}: {r['valid']} valid answers of {r['asks']} calls ({rate}), {r['invalid']} invalid, "
            f"{r['no_answer']} without an answer, {r['repeats']} repeats{over}; {r['fallbacks']} of {r['queries']} "
            f"queries fell back to a uniform sample, {r['initial']} were the initial population{refused}"
        )

    @property
    def name(self) -> str:
        return str(getattr(self.client, "model", type(self.client).__name__))

    def ask(self, messages: list[dict[str, str]], space: SearchSpace, tag: str | None = None) -> tuple[Any, bool]:
        """The model's completion (with `.text`), and whether the request carried the space's schema. Raises what
        the client raises (LLMError when the call failed for good)."""
        if self.send_schema and self._formatted is not None:
            fmt = {
                "type": "json_schema",
                "json_schema": {"name": f"{space.name}_architecture", "strict": True, "schema": space.schema()},
            }
            try:
                if self._formatted is self.client:
                    return self.client.complete(messages, PURPOSE, tag=tag, response_format=fmt), True
                self._format.value = fmt
                return self._formatted.complete(messages, PURPOSE, tag=tag), True
            except LLMCancelled:
                raise
            except LLMError as err:
                if "response_format" not in str(err) and "json_schema" not in str(err):
                    raise
                self.send_schema, self.schema_refused = False, str(err)[:500]
        return self.client.complete(messages, PURPOSE, tag=tag), False

    def report(self) -> dict[str, Any]:
        """Every search's stats and their totals, as a summary line shows them."""
        totals = Counter[str]()
        for stats in self.searches:
            for key in ("queries", "initial", "asks", "valid", "invalid", "no_answer", "repeats", "over_limits"):
                totals[key] += getattr(stats, key)
            totals["fallbacks"] += stats.fallbacks
            totals["schema_sent"] += stats.schema_sent
        return {
            "model": self.name,
            **{key: totals[key] for key in ("queries", "initial", "asks", "valid", "invalid", "no_answer")},
            **{key: totals[key] for key in ("repeats", "over_limits", "fallbacks", "schema_sent")},
            "valid_rate": totals["valid"] / totals["asks"] if totals["asks"] else None,
            "schema_refused": self.schema_refused,
            "searches": [stats.report() for stats in self.searches],
        }


def in_space_model(settings: Settings, task: Task | None, archive: Archive | None, run_id: str | None) -> InSpaceModel:
    """The model of an in-space search with the run's settings (its first `--model`): calls are ledgered in
    `archive` under `run_id`."""
    from agentarch.config import ModelArm, parse_arms
    from agentarch.llm.client import LLMClient

    if not settings.model:
        raise UsageError(f"--algo {IN_SPACE} asks a model: give --model (and --api-base for a local server)")
    arm = parse_arms(settings.models)[0] if settings.models else ModelArm.parse(settings.model)
    return InSpaceModel(LLMClient.for_arm(arm, settings, archive=archive, run_id=run_id), task)


@functools.cache
def _template(folder: Path) -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # the output is a prompt, not HTML
    )
    return env.get_template(TEMPLATE)


@dataclass
class Exchange:
    """One call to the model: the messages it sent, the answer's text (None: the call failed for good) and what the
    client's ledger knows of it (`call_ids` of every attempt, their cost and the answering attempt's tokens), so a
    caller that records a candidate can link the calls to it."""

    messages: list[dict[str, str]]
    text: str | None
    call_ids: list[int] = field(default_factory=list)
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Tried:
    arch: str
    score: float | None
    status: str


class InSpaceLLM(Proposer):
    """A model proposing architectures of `space` one query at a time; seeded for its fallback samples (a model's
    answers are as repeatable as its server makes them)."""

    name = IN_SPACE

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        model: InSpaceModel | None,
        *,
        distinct: bool = False,
        direction: Direction = "max",
        best: int | None = None,
        latest: int | None = None,
        initial: int | None = None,
        reask: int | None = None,
        prompts_dir: Path | None = None,
        tag: str | None = None,
        claim: Callable[[str], bool] | None = None,
        limits: Limits | None = None,
    ) -> None:
        """`best` and `latest`: how many of this search's architectures each prompt shows; `initial`: uniform samples
        before the first call (as REA's initial population; 0: the model chooses from the first query); `reask`: how
        many more calls a repeated answer gets (told what it repeated) before the query falls back. None takes the
        model's `search` setting. The search never proposes an architecture twice, `distinct` or not. `tag` names its
        calls in the client's warnings and calls in progress (default `llm-space/SEED`). `claim`, where searches run
        side by side (the agent loop's proposals), is asked for each architecture before it is proposed and takes it
        for this search: False when another search holds it, which makes an answer a repeat and a sample drawn again.
        `limits`: what every architecture proposed keeps to (stated in the prompt; an answer over them falls back)."""
        given = {"best": best, "latest": latest, "initial": initial, "reask": reask}
        asks = model.search if model is not None else SEARCH
        chosen = {k: v if v is not None else asks[k] for k, v in given.items()}
        space.fields()  # a space that cannot say its fields cannot be asked for: refuse before the first query
        self.space = space
        self.seed = seed
        self.model = model
        self.rng = random.Random(seed)
        self.pool = Distinct(space, True, self.rng, limits)  # `distinct` or not, the model is never let repeat itself
        self.limits = limits
        self.direction = direction
        self.best, self.latest, self.initial, self.reask = (chosen[k] for k in ("best", "latest", "initial", "reask"))
        self.prompts_dir = prompts_dir or PROMPTS_DIR
        self.tried: list[_Tried] = []
        self.pending: list[str] = []  # proposed, not yet observed: shown to the model as being evaluated
        self.stats = InSpaceStats(seed=seed)
        self.tag = tag or f"{IN_SPACE}/{seed}"
        self.claim = claim
        self.exchanges: list[Exchange] = []  # every call of this search, in order
        if model is not None:
            model.searches.append(self.stats)

    # -- the prompt -------------------------------------------------------------------------------------------------

    def _answer(self, arch: str) -> str:
        return json.dumps(self.space.to_fields(arch))[:MAX_ARCH_CHARS]

    def _shown(self, tried: _Tried) -> dict[str, str]:
        score = "not evaluated" if tried.score is None else f"{tried.score:.6g}"
        return {
            "score": f"{score} ({tried.status})" if tried.status != "trained" else score,
            "answer": self._answer(tried.arch),
            "size": self._size(tried.arch),
        }

    def _size(self, arch: str) -> str:
        """`arch`'s parameters (and FLOPs, when a constraint names them) as the prompt shows them; "" without limits."""
        if self.limits is None or not self.limits.measured:
            return ""
        size = self.limits.size(arch)
        flops = any(c.measure == "flops" for c in self.limits.constraints) and size.flops is not None
        return f"{size.params:,} parameters" + (f", {size.flops:,} FLOPs" if flops else "")

    def messages(self, avoid: list[str] | tuple[str, ...] = ()) -> list[dict[str, str]]:
        """The system and user messages of the next query; `avoid` are architectures being evaluated now (or that
        the model just repeated): shown as not to be proposed again."""
        scored = [t for t in self.tried if t.score is not None]
        best: list[_Tried] = []
        for tried in sorted(scored, key=lambda t: ranking.key(t.score, self.direction), reverse=True):
            if len(best) >= self.best:
                break
            if all(self.space.identity(tried.arch) != self.space.identity(b.arch) for b in best):
                best.append(tried)
        shown = {id(t) for t in best}
        latest = [t for t in self.tried if id(t) not in shown][-self.latest :] if self.latest else []
        task = self.model.task if self.model is not None else None
        fields = {name: [json.dumps(v) for v in values] for name, values in self.space.fields().items()}
        context = {
            "space": self.space,
            "grammar": self.space.grammar or f"the {self.space.name} search space",
            "fields": fields,
            "notes": self.space.field_notes(),
            "task": task.name if task is not None else f"a task the {self.space.name} space builds networks for",
            "metric": task.metric if task is not None else "the validation score",
            "better": "higher" if self.direction == "max" else "lower",
            "best": [self._shown(t) for t in best],
            "latest": [self._shown(t) for t in latest],
            "avoid": [self._answer(a) for a in avoid][: self.latest],
            "evaluated": len(self.tried),
            "source": "this search",
            "limits": self.limits.describe() if self.limits is not None else [],
        }
        template = _template(self.prompts_dir)
        return [
            {"role": "system", "content": template.render(part="system", **context).strip()},
            {"role": "user", "content": template.render(part="user", **context).strip()},
        ]

    # -- asking -----------------------------------------------------------------------------------------------------

    def propose(self, n: int, avoid: list[str] | tuple[str, ...] = ()) -> list[Proposal]:
        """The next `n` proposals; `avoid` are architectures being evaluated now elsewhere (another proposal of the
        loop): shown to the model as such, and none of them is proposed (an answer naming one is a repeat)."""
        held = []
        for arch in avoid:
            try:
                canonical = self.space.validate(arch)
            except SpaceError:
                continue
            if self.space.identity(canonical) not in self.pool.seen:
                self.pool.remember(canonical)
                held.append(canonical)
        try:
            return [self._one(avoid) for _ in range(n)]  # the earlier ones of the batch are shown as being evaluated
        finally:
            for arch in held:  # not this search's: a later query may propose it once it is evaluated
                self.pool.forget(arch)

    def _one(self, avoid: list[str] | tuple[str, ...]) -> Proposal:
        stats = self.stats
        stats.queries += 1
        if stats.queries <= self.initial:
            stats.initial += 1
            stats.outcomes.append("initial")
            return Proposal(self.name, arch=self._draw(), note=INITIAL)
        if self.model is None:
            raise UsageError(f"the {IN_SPACE} proposer asks a model: give --model (and --api-base for a local server)")
        shown = [*self.pending, *avoid]
        kind, reason = "", ""
        for _ in range(1 + self.reask):
            arch, kind, reason = self._ask(shown)
            if kind != "repeat":
                break
            shown.append(arch or "")
        if not kind:
            assert arch is not None
            self.pool.accept(arch)
            stats.outcomes.append("answer")
            self.pending.append(arch)
            return Proposal(self.name, arch=arch, note="the model's answer")
        stats.fell_back(kind, reason)
        arch = self._draw()
        self.pending.append(arch)
        return Proposal(self.name, arch=arch, note=f"fallback: uniform sample ({reason})"[:1000])

    def _draw(self) -> str:
        """A uniform sample this search has not proposed (and, with `claim`, that no other search holds)."""
        for _ in range(MAX_REDRAWS):
            arch = self.pool.sample()
            if self.claim is None or self.claim(arch):
                return arch
            self.pool.forget(arch)  # another search's: not proposed here
        raise SpaceExhausted(
            f"no architecture of the {self.space.name} space that no other proposal holds in {MAX_REDRAWS} draws"
        )

    def _ask(self, avoid: list[str]) -> tuple[str | None, str, str]:
        """One call: (the architecture answered or None, what went wrong or "", the reason in words)."""
        assert self.model is not None
        stats = self.stats
        stats.asks += 1
        started = time.monotonic()
        messages = self.messages(avoid)
        try:
            completion, with_schema = self.model.ask(messages, self.space, tag=self.tag)
        except LLMCancelled:
            raise
        except LLMError as err:
            stats.no_answer += 1
            self.exchanges.append(Exchange(messages, None, list(getattr(err, "call_ids", []))))
            return None, "no answer", f"no answer: {err}"
        finally:
            stats.llm_seconds += time.monotonic() - started
        self.exchanges.append(
            Exchange(
                messages,
                str(completion.text or ""),
                list(getattr(completion, "call_ids", []) or []),
                float(getattr(completion, "cost_usd", 0.0) or 0.0),
                int(getattr(completion, "prompt_tokens", 0) or 0),
                int(getattr(completion, "completion_tokens", 0) or 0),
            )
        )
        stats.schema_sent += with_schema
        stats.prompt_tokens += int(getattr(completion, "prompt_tokens", 0) or 0)
        stats.completion_tokens += int(getattr(completion, "completion_tokens", 0) or 0)
        try:
            arch = self.space.read_answer(str(completion.text or ""))
        except SpaceError as err:
            stats.invalid += 1
            return None, "invalid", f"invalid answer: {err}"
        stats.valid += 1
        over = self.limits.breaks(arch) if self.limits is not None else None
        if over is not None:
            stats.over_limits += 1
            return None, "over the limits", f"the model's architecture is over the limits: {over}"
        if self.space.identity(arch) in self.pool.seen:
            stats.repeats += 1
            return arch, "repeat", f"the model repeated an architecture this search had proposed: {arch}"
        if self.claim is not None and not self.claim(arch):
            stats.repeats += 1
            return arch, "repeat", f"the model chose an architecture another proposal is evaluating: {arch}"
        return arch, "", ""

    # -- being told -------------------------------------------------------------------------------------------------

    def observe(self, observations: list[Observation]) -> None:
        for obs in observations:
            if obs.proposal.arch is None:
                continue
            try:
                arch = self.space.validate(obs.proposal.arch)
            except SpaceError:
                continue  # not of this space (a pool from elsewhere): nothing to show the model
            self._settle(arch)
            self.tried.append(_Tried(arch, obs.val_accuracy, obs.status))

    def _settle(self, arch: str) -> None:
        if arch in self.pending:
            self.pending.remove(arch)

    def withdraw(self, proposals: list[Proposal]) -> None:
        """Proposals nobody evaluated: the search goes on as if they were not made (the queries stay counted)."""
        for proposal in proposals:
            self.pool.forget(proposal.arch or "")
            self._settle(proposal.arch or "")

    def replay(self, observations: list[Observation]) -> None:
        """Rebuild the search from earlier results, in order (a resumed run, or the loop's pool): they count as
        proposed and are shown to the model as evaluated."""
        for obs in observations:
            if obs.proposal.arch:
                try:
                    self.pool.remember(self.space.validate(obs.proposal.arch))
                except SpaceError:
                    continue
        self.observe(observations)
