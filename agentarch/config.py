"""One settings object, one source of truth: built-in defaults < TOML file < environment < flags.

The TOML file is `agentarch.toml` in the working directory, or the path in AGENTARCH_CONFIG.
Environment variables are the field names upper-cased with an `AGENTARCH_` prefix
(`AGENTARCH_ARCHIVE=runs/a.db`). Command-line flags are passed to `load_settings` as overrides.

A field's description, default and bounds are written once, here: `field_doc` (agentarch/cli/fielddocs.py) reads them off the
field for the `--help` of every flag that sets it, so the help cannot drift from what is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from agentarch.errors import AgentarchError, UsageError


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentarch"


class ConfigError(AgentarchError, ValueError):
    """The configuration cannot be used; the message names the file or field to fix."""


# Models: one `--model` spec each; the bandit (agentarch.loop.bandit) chooses among them.

_BASE = re.compile(r"^https?://[^\s@/#]+(/[^\s@#]*)?$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONCURRENCY = re.compile(r"~(\d*)\s*$")
SPEC_HELP = (
    "a model is MODEL[@API_BASE][#KEY_VARIABLE][~CONCURRENCY], e.g. openai/gpt-4o-mini, "
    "ollama/qwen2.5-coder:7b@http://127.0.0.1:11434 or openai/my-model@https://host/v1#MY_KEY~4 "
    "(the key itself stays in that environment variable; ~N: at most N calls to the model at once, "
    "default: what the server says, else 1 for a local server and 8 for a hosted one)"
)


@dataclass(frozen=True)
class ModelArm:
    """One model the run may ask: its litellm name (what candidates and the LLM ledger record), the server it
    is reached at (None: the provider's own, or the run's `api_base`) and the environment variable holding
    its key (None: litellm's usual variable for the provider, or the run's `api_key`)."""

    name: str
    api_base: str | None = None
    key_env: str | None = None
    concurrency: int | None = None  # calls in flight to the model at most (None: the run's llm_concurrency, or ask)

    @classmethod
    def parse(cls, spec: str) -> ModelArm:
        """An arm from `MODEL[@API_BASE][#KEY_VARIABLE][~CONCURRENCY]`. `@` starts the server only before http:// or
        https://, so a model name with a version after `@` (vertex_ai/claude-3-5-sonnet@20240620) stays whole; `~N`
        counts only at the very end and only as digits, so a `~` inside a name or URL stays where it is. Errors
        quote the model name only: what follows `#` might be a key pasted by mistake."""
        spec = spec.strip()
        limit = _CONCURRENCY.search(spec)
        if limit and spec[: limit.start()] and not limit.group(1):
            raise UsageError(f"~ at the end of {spec[: limit.start()].partition('#')[0]!r} needs a number; {SPEC_HELP}")
        if limit and limit.group(1):
            if int(limit.group(1)) < 1:
                raise UsageError(f"model {spec.partition('#')[0].partition('~')[0]!r} needs ~1 or more; {SPEC_HELP}")
            spec = spec[: limit.start()]
        head, hashed, key = spec.strip().partition("#")
        split = re.search(r"@(?=https?://)", head)
        model, base = (head[: split.start()], head[split.start() + 1 :]) if split else (head, "")
        if not model or re.search(r"\s", model):
            raise UsageError(f"{model.strip() or 'nothing'!r} is not a model name; {SPEC_HELP}")
        if not split and re.search(r"@(localhost|[\w-]+[.:])", model):
            raise UsageError(f"the server address in {model!r} needs http:// or https:// after the @; {SPEC_HELP}")
        if "@" in base:
            raise UsageError(
                f"the server address of model {model!r} holds an @: a key belongs in an environment variable, named "
                f"after #; {SPEC_HELP}"
            )
        if base and not _BASE.match(base):
            raise UsageError(f"the server address of model {model!r} is not an http(s) URL with a host; {SPEC_HELP}")
        if hashed and not _KEY.match(key):
            raise UsageError(
                f"after # model {model!r} needs the NAME of an environment variable holding its key (letters, "
                f"digits and _), never the key itself; {SPEC_HELP}"
            )
        concurrency = int(limit.group(1)) if limit and limit.group(1) else None
        return cls(name=model, api_base=base or None, key_env=key or None, concurrency=concurrency)

    @property
    def spec(self) -> str:
        """The arm written back as a spec (what a run's config keeps; it names the key's variable, never the key)."""
        return (
            self.name
            + (f"@{self.api_base}" if self.api_base else "")
            + (f"#{self.key_env}" if self.key_env else "")
            + (f"~{self.concurrency}" if self.concurrency else "")
        )

    def api_key(self) -> str | None:
        """The key from the arm's variable (None when it names none); a variable that is unset is an error."""
        if self.key_env is None:
            return None
        key = os.environ.get(self.key_env)
        if not key:
            raise UsageError(f"model {self.name} reads its key from ${self.key_env}, which is not set; export it")
        return key


def parse_arms(specs: Sequence[str]) -> list[ModelArm]:
    """The arms of `--model` specs, in order; two arms with one model name cannot be told apart in the archive."""
    arms = [ModelArm.parse(spec) for spec in specs]
    names = [arm.name for arm in arms]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(
            f"model {', '.join(twice)} is given more than once; give each --model once (the bandit tells models "
            "apart by name, so one model behind two servers is one arm)"
        )
    return arms


def unset(meaning: str) -> dict[str, str]:
    """The schema extra of a field whose default is None: what None means, said the way a person reads it.

    A None default alone reads as "nothing" in `--help` and in the agentarch.toml reference, when it
    really means the task's epochs, all cores or an offline run.
    """
    return {"unset": meaning}


class Settings(BaseSettings):
    """Everything a run can be told. Field docs double as the reference for agentarch.toml."""

    model_config = SettingsConfigDict(env_prefix="AGENTARCH_", extra="forbid")

    archive: Path = Field(Path("archive/archive.db"), description="the SQLite archive file")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="prepared task data (inputs and labels)")
    data_dir: Path | None = Field(
        None, description="where file-based datasets (mnist, cifar10, ...) live", json_schema_extra=unset("none")
    )
    download: bool = Field(False, description="allow fetching a missing dataset into data_dir")
    task: str = Field("digits", description="the task candidates are trained and scored on")
    seed: int = Field(0, description="training seed")
    split_seed: int = Field(0, description="seed of the train/val/test split; keep it fixed to compare candidates")
    epochs: int | None = Field(
        None, ge=1, description="training epochs per candidate (the fidelity)", json_schema_extra=unset("the task's")
    )
    isolation: Literal["auto", "bubblewrap", "process"] = Field(
        "auto", description="bubblewrap (full isolation), process (weaker fallback), auto (bubblewrap when it works)"
    )
    scoring: Literal["trusted", "graph"] = Field(
        "graph",
        description="graph: train on the training split alone, export the trained network to ONNX and score the "
        "graph in a clean evaluator that runs no candidate code (docs/sandbox.md); trusted: score the outputs the "
        "candidate's own process computes",
    )
    weak_sandbox_ok: bool = Field(
        False,
        description="run LLM answers and user files in the 'process' sandbox even "
        "where this kernel leaves it gaps (no Landlock, or Landlock older than ABI 6); "
        "`agentarch doctor` lists them",
    )
    memory_mb: int = Field(6144, ge=256, description="address-space limit of a sandboxed evaluation")
    timeout_s: float = Field(900.0, gt=0, description="wall-clock limit of one evaluation, smoke and training together")
    smoke_timeout_s: float = Field(120.0, gt=0, description="wall-clock limit of the smoke stage alone")
    max_pids: int = Field(64, ge=8, description="processes and threads a sandboxed evaluation may hold")
    max_file_mb: int = Field(1024, ge=1, description="largest file a sandboxed evaluation may write")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for training", json_schema_extra=unset("all cores")
    )
    budget_slack: float = Field(
        4.0,
        ge=0,
        description="the training budget the host holds: a sandbox job may use this many times the CPU time its "
        "network's measured size and the steps asked for are priced at, plus a fixed allowance, before it is "
        "killed and failed with [train:budget] (docs/sandbox.md); 0 turns the budget off",
    )
    checkpoints: bool = Field(
        True,
        description="the trainer hands the host a checkpoint (weights, optimizer, random generators, step) at an "
        "epoch's end, and a candidate whose job was lost (the orchestrator killed, a Ray worker or node lost) resumes "
        "from its latest one on `--resume` instead of training from scratch",
    )
    checkpoint_s: float = Field(
        30.0,
        ge=0,
        description="seconds between training checkpoints: one at the first epoch's end this long after the last "
        "(0: every epoch); a kill costs at most this much training, or one epoch, per candidate in flight",
    )
    novelty_threshold: float = Field(
        0.99,
        gt=0,
        le=1,
        description="stop a candidate before training when its structure (the operators and shapes of its smoke "
        "run) is at least this similar to a trained candidate's; recorded as a structural duplicate (1.0: off)",
    )
    # -- the agent loop (agentarch run) --
    model: str | None = Field(
        None,
        description="litellm model string, e.g. openai/gpt-4o-mini or ollama/qwen2.5-coder",
        json_schema_extra=unset("none: run offline with regularized evolution"),
    )
    models: list[str] = Field(
        default_factory=list,
        description="several models for one run, one --model each, as MODEL[@API_BASE][#KEY_VARIABLE]; each "
        "proposal's model is chosen by a cost-aware UCB bandit (improvement over the parent per USD, local "
        "models' seconds priced), rebuilt from the archive on resume",
        json_schema_extra=unset("--model alone"),
    )
    api_base: str | None = Field(
        None,
        description="OpenAI-compatible server for local models (vLLM, Ollama, llama.cpp), e.g. http://127.0.0.1:8000/v1",
        json_schema_extra=unset("the provider's own"),
    )
    api_key: SecretStr | None = Field(
        None,
        description="LLM key (better: the provider's own variable, e.g. OPENAI_API_KEY); "
        "never logged, never shown to candidates",
        json_schema_extra=unset("none"),
    )
    llm_concurrency: int | None = Field(
        None,
        ge=1,
        description="LLM calls in flight to one model at once, for every model without its own ~N; calls beyond it "
        "wait their turn, and the wait counts against no timeout",
        json_schema_extra=unset(
            "what the server says (llama.cpp's slots), else 1 for a local server, 8 for a hosted one"
        ),
    )
    llm_stream: bool = Field(
        True,
        description="stream answers, so that timeouts measure the time to the first token and stalls between tokens "
        "rather than the whole answer (off: one wall clock, llm_timeout_s, for a server that cannot stream)",
    )
    llm_first_token_timeout_s: float = Field(
        300.0,
        gt=0,
        description="seconds from sending a streamed call to its first token (the server reading the prompt); "
        "waiting for the model's concurrency limit does not count",
    )
    llm_stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description="most seconds between two chunks of a streamed answer before the call is cut and retried",
    )
    llm_min_tokens_per_s: float = Field(
        0.5,
        ge=0,
        description="slowest streamed answer accepted, in tokens per second since its first token, checked once a "
        "minute has passed (0: off)",
    )
    llm_timeout_s: float = Field(
        120.0,
        gt=0,
        description="seconds before an LLM call that does not stream (llm_stream off) is abandoned and retried",
    )
    context_tokens: int | None = Field(
        None,
        ge=512,
        description="the model's context window in tokens, prompt and answer together; prompts are fitted to it "
        "(with what the server or litellm says, the smaller wins)",
        json_schema_extra=unset("what the server (/props, /v1/models) or litellm says"),
    )
    llm_retries: int = Field(4, ge=0, description="retries of a failed LLM call (429 and 5xx honour Retry-After)")
    max_tokens: int = Field(
        8192,
        ge=256,
        le=1_000_000,
        description="the most tokens an LLM may answer with (a module takes a few thousand); with a known context "
        "window, prompts are fitted to leave the answer this much or half the window, whichever is less, and each "
        "request asks for the room its prompt leaves, up to this",
    )
    max_answer_bytes: int = Field(
        200_000,
        ge=10_000,
        le=100_000_000,
        description="the largest LLM answer accepted, in bytes; a larger one is refused as it arrives, not stored, "
        "and recorded as a failed call",
    )
    temperature: float = Field(0.8, ge=0, le=2, description="LLM sampling temperature")
    budget: int = Field(20, ge=1, description="candidates to propose in a run (--max-candidates)")
    max_cost: float | None = Field(
        None, gt=0, description="stop a run once its LLM calls cost this many USD", json_schema_extra=unset("no cap")
    )
    hours: float | None = Field(
        None, gt=0, description="stop a run after this many hours", json_schema_extra=unset("no limit")
    )
    schedule: Literal["steady", "rounds"] = Field(
        "steady",
        description="steady: a proposal starts whenever a slot or a queue place frees (budgets checked per "
        "candidate); rounds: batch proposals at a time, each round waiting for its slowest candidate",
    )
    batch: int = Field(
        4,
        ge=1,
        le=256,
        description="candidates per round with --schedule rounds (steady state keeps slots + queue in flight "
        "and ignores it)",
    )
    queue: int = Field(
        2,
        ge=0,
        description="proposals kept ready ahead of the training slots; the LLM works while "
        "slots train, and at most slots + queue proposals are in flight",
    )
    slots: int = Field(
        1,
        ge=1,
        description="candidates trained at once on this machine (CPU workers; on a GPU "
        "host there is one slot per visible GPU instead)",
    )
    warm_sandboxes: bool = Field(
        True,
        description="keep each local slot's next sandbox started (interpreter and torch imported, waiting for its "
        "candidate) while the slot's job runs, so a job's start leaves the critical path; same isolation as a cold "
        "start (docs/sandbox.md)",
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="where sandboxed evaluations run: local slots or a "
        "Ray cluster (one task per evaluation, num_gpus=1 on GPU clusters)",
    )
    per_gpu: int = Field(
        1,
        ge=1,
        le=16,
        description="candidates packed on each GPU at once (small models leave a GPU "
        "mostly idle; Ray gets a 1/per_gpu GPU share per task)",
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join: auto, or HEAD_IP:6379; its nodes need agentarch and its sandbox, and get "
        "the task's data through Ray (docs/cluster.md)",
        json_schema_extra=unset("start a local one"),
    )
    examples: int = Field(
        3, ge=0, le=6, description="few-shot examples per prompt (parent, best, baseline's best, diverse)"
    )
    parent_strategy: Literal["topk", "weighted", "niches"] = Field(
        "topk",
        description="parent selection: top-k random (ASI-Arch), score-weighted with a child penalty (ShinkaEvolve), "
        "MAP-Elites niches over (parameters, accuracy)",
    )
    feedback: bool = Field(
        True,
        description="build each prompt from the archive (parent, best examples, analyses) as results come in; "
        "off: from the shipped seed architectures only, every proposal independent (the best-of-N control, "
        "agentarch baseline --algo best-of-n)",
    )
    edit_mode: Literal["full", "diff", "mixed"] = Field(
        "full",
        description="what the LLM is asked for: full (a whole module), diff (SEARCH/REPLACE edits of the parent, "
        "applied strictly; one retry with the reason, then a full module), mixed (diff for --edit-rate of the "
        "proposals)",
    )
    edit_rate: float = Field(
        0.5, ge=0, le=1, description="with --edit-mode mixed: the share of proposals asked for a diff"
    )
    notebook_every: int = Field(
        10,
        ge=0,
        description="every this many recorded candidates, the LLM condenses the analyses into the run's notebook, "
        "which later prompts include (0: no notebook)",
    )
    knowledge: Path | None = Field(
        None,
        description="a folder (or file) of Markdown or text notes the proposals read from ('starter': the notes "
        "shipped with agentarch): indexed into the archive's knowledge base when the run starts and refreshed when "
        "its files change; each proposal's prompt shows the knowledge_entries entries most relevant to its parent, "
        "the latest analysis and the notebook, and the candidate records which",
        json_schema_extra=unset("none: the prompts show no knowledge entries"),
    )
    knowledge_entries: int = Field(
        3, ge=1, le=10, description="with knowledge: the entries each proposal's prompt shows at most"
    )
    judge: str | None = Field(
        None,
        description="a model (MODEL[@API_BASE][#KEY_VARIABLE]) that rates each trained candidate's novelty, soundness "
        "and complexity (1-10) with a short justification, kept beside its measured scores; usable as an objective "
        "(judge:max) and a tie-breaker in parent choice; its calls count in max_cost",
        json_schema_extra=unset("none: no candidate is rated"),
    )
    review: bool = Field(
        False,
        description="pause each candidate that passed the checks until a person approves, "
        "rejects or edits it (agentarch review, or the web UI); off = autonomous overnight mode",
    )
    review_poll_s: float = Field(1.0, gt=0, description="how often a paused run looks for review decisions")
    web_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="the address `agentarch serve` binds; anything but loopback (127.0.0.1, localhost, ::1) needs a "
        "web_token",
    )
    web_port: int = Field(8000, ge=1, le=65535, description="the port `agentarch serve` listens on")
    web_token: SecretStr | None = Field(
        None,
        description="the token every request to `agentarch serve` must carry (?token= once, then a cookie, or the "
        "header 'Authorization: Bearer'), at least 16 characters; needed to bind anything but loopback",
        json_schema_extra=unset("none: no token, so loopback only"),
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Host names `agentarch serve` answers to besides the bound address and localhost, as NAME (any "
        "port: behind a proxy) or NAME:PORT; any other Host header is refused, so a DNS-rebinding page cannot reach it",
        json_schema_extra=unset("the bound address and localhost only"),
    )
    repair_tries: int = Field(
        2, ge=0, le=5, description="times the LLM may fix a candidate that fails its checks or smoke run"
    )
    offline_space: str = Field(
        "nb201",
        description="search space of the offline evolution when no model is configured; a task whose kind it "
        "cannot build uses the first space that can (mixer for token, sequence and lm; mlp for tables)",
    )
    search_recipe: bool = Field(
        False,
        description="offline proposers (random, REA, TPE) search each candidate's training recipe with its "
        "architecture: optimizer, learning rate, weight decay, schedule, warmup, label smoothing and augmentations "
        "within the task's bounds (its [recipe] table), written into the code as RECIPE; epochs and time stay the "
        "task's. Off: every proposal trains with the task's default recipe",
    )
    propose_in: str | None = Field(
        None,
        description="the search space (nb201, macro, mixer, mlp) in which the model chooses each proposal's "
        "architecture, as a JSON object of the space's fields (the request carries the space's JSON schema), instead "
        "of writing a whole module: for a model too small to write the candidate contract; an answer that is no "
        "architecture of the space takes a uniform sample, counted in the summary. Needs --model; the space must "
        "build the task's kind",
        json_schema_extra=unset("none: the model writes each candidate's module"),
    )
    objectives: list[str] = Field(
        default_factory=list,
        description="what the run optimises, as METRIC:max or METRIC:min, one per --objective; with two or more, "
        "parents are chosen by Pareto front and crowding (NSGA-II). Metrics: val (the task's metric), params, "
        "flops, latency_ms, peak_memory_mb",
        json_schema_extra=unset("the task's metric alone"),
    )
    constraints: list[str] = Field(
        default_factory=list,
        description="hard limits a candidate must meet to count as a parent or on the front, "
        "e.g. params<=200000 or latency_ms<5, one per --constraint",
        json_schema_extra=unset("none"),
    )
    islands: int = Field(
        1, ge=1, le=64, description="separate parent pools; each proposal belongs to one island (round robin)"
    )
    migrate_every: int = Field(
        10, ge=1, description="with islands: every this many recorded candidates, each island's best joins the next"
    )
    verify_top: int = Field(
        0, ge=0, description="retrain the run's best K candidates at the verify fidelity as slots free (0: off)"
    )
    verify_epochs: int | None = Field(
        None,
        ge=1,
        description="epochs of a verify retraining (the higher fidelity)",
        json_schema_extra=unset("3x the explore epochs"),
    )
    screen: int = Field(
        1,
        ge=1,
        le=64,
        description="proposals per training: the cheap stages (checks, dedup, smoke with proxies) run on all, "
        "and only the best by the archive's predictor trains; the rest are recorded as screened",
    )
    screen_explore: float = Field(
        0.1,
        ge=0,
        le=1,
        description="with --screen: the share of groups whose trained member is drawn at random instead of by the "
        "predictor (exploration, so the predictor keeps seeing what it would rank low)",
    )
    population: int = Field(
        10, ge=2, description="regularized evolution: population size P (the most recent P evaluations)"
    )
    sample_size: int = Field(3, ge=1, description="regularized evolution: members sampled per tournament S")

    @model_validator(mode="after")
    def _first_model(self) -> Settings:
        """With several models, `model` is the first one's name: what makes the run an LLM run (not offline)."""
        if self.models:
            self.model = self.model or parse_arms(self.models)[0].name
        return self

    @model_validator(mode="after")
    def _in_space(self) -> Settings:
        """--propose-in asks a model for architectures, not modules: it needs one and takes no diff edits (whether the
        space exists and builds the task's kind is checked when a run starts: agentarch.loop.context.in_space_of)."""
        if self.propose_in is not None:
            self.propose_in = self.propose_in.strip()
            if not self.propose_in:
                raise ValueError(
                    "propose_in names a search space (nb201, macro, mixer, mlp); leave it out to write modules"
                )
            if self.model is None:
                raise ValueError(
                    f"propose_in={self.propose_in} asks a model to choose architectures: give --model (and --api-base "
                    "for a local server), or leave --propose-in out to run offline evolution"
                )
            if self.edit_mode != "full":
                raise ValueError(
                    f"edit_mode={self.edit_mode} edits modules, and propose_in asks for architectures of a space: "
                    "give one or the other"
                )
        return self

    @model_validator(mode="after")
    def _web_access(self) -> Settings:
        """A short web token can be guessed, and an allowed host with a scheme or a path matches no Host header; an
        empty token (`AGENTARCH_WEB_TOKEN=`) means none."""
        if self.web_token is not None and not self.web_token.get_secret_value():
            self.web_token = None
        if self.web_token is not None and len(self.web_token.get_secret_value()) < 16:
            raise ValueError("web_token needs at least 16 characters (e.g. `openssl rand -hex 16`)")
        for host in self.allow_hosts:
            if not re.fullmatch(
                r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*", host
            ):
                raise ValueError(
                    f"allow_hosts takes NAME or NAME:PORT (e.g. archive.lan, 10.0.0.5:8000 or [fd00::5]:8000), "
                    f"not {host!r}"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("AGENTARCH_CONFIG", "agentarch.toml"))
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file)


def load_settings(**overrides: Any) -> Settings:
    """Settings with the given flag values on top; None means 'flag not given'."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())
        source = os.environ.get("AGENTARCH_CONFIG", "agentarch.toml")
        raise ConfigError(f"invalid settings ({problems}); check {source}, AGENTARCH_* variables and flags") from None
    except ValueError as err:  # a TOML syntax error surfaces here
        source = os.environ.get("AGENTARCH_CONFIG", "agentarch.toml")
        raise ConfigError(f"cannot read {source}: {err}") from None
