"""Runs the stages in flow order inside one run directory, each one atomically.

A stage writes into `<run_dir>/.<stage>.partial/`; only when it returns does the runner put
`DONE.json` there and rename the folder to `<run_dir>/<stage>/`. So a folder named after a
stage is always complete, a crash leaves at most a `.partial` folder (which the next run
discards, or, for a resumable stage such as training, picks up), and a re-run skips what is
done. A stage is done only while its config and the stages before it are unchanged: its
marker records a fingerprint of the config sections it and its inputs read, and the run ids
of the upstream markers it consumed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

from trainer import distributed, memory
from trainer.config import STAGE_ORDER, QuantFormat, Stage, TrainerConfig
from trainer.errors import StageNotBuilt, TrainerError
from trainer.logs import library_output, run_log_file

log = logging.getLogger(__name__)

MARKER = "DONE.json"

# Config sections each stage reads (dotted: one key of a section); a stage's fingerprint covers
# its own and its upstream ones.
STAGE_SECTIONS: dict[Stage, tuple[str, ...]] = {
    Stage.data: ("model", "data"),
    Stage.train: ("lora", "train"),
    Stage.merge: ("merge",),
    Stage.quantize: ("quantize",),
    Stage.evaluate: ("eval",),
    Stage.export: ("eval.gates", "eval.gate"),
}
# Keys of a section that a later stage reads instead: evaluate measures, export judges, so a new
# quality threshold re-judges the scores in seconds instead of scoring every model again.
LATER_KEYS: dict[str, tuple[str, ...]] = {"eval": ("gates", "gate")}

# A resumable stage keeps its partial folder between attempts (checkpoints live there) while
# its config and inputs are unchanged.
RESUMABLE: frozenset[Stage] = frozenset({Stage.train})

# Stages every rank of a multi-process launch runs together; the others run on rank 0 only.
DISTRIBUTED_STAGES: frozenset[Stage] = frozenset({Stage.train})


@dataclass
class StageContext:
    """What a stage gets: the typed config, where it reads, where it writes."""

    cfg: TrainerConfig
    run_dir: Path
    out_dir: Path
    console: Console

    def stage_dir(self, stage: Stage) -> Path:
        """The finished folder of an upstream stage (guaranteed complete by the runner)."""
        return self.run_dir / stage.value


StageFn = Callable[[StageContext], dict[str, Any]]


@dataclass
class StageResult:
    stage: Stage
    status: str  # done, skipped, not built, failed
    seconds: float = 0.0
    note: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def stage_function(stage: Stage) -> StageFn:
    """Imported lazily so that `--cfg job` and the data stage never import torch-heavy modules."""
    module = importlib.import_module(f"trainer.stages.{stage.value}")
    return module.run


def fingerprint(raw_cfg: DictConfig, stage: Stage) -> str:
    """Hash of the unresolved config sections the stage and its upstream stages read."""
    upto = STAGE_ORDER[: STAGE_ORDER.index(stage) + 1]
    sections = {}
    for name in (name for s in upto for name in STAGE_SECTIONS[s]):
        node = OmegaConf.select(raw_cfg, name)
        value = (
            OmegaConf.to_container(node, resolve=False, enum_to_str=True)
            if OmegaConf.is_config(node)
            else node
        )
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in LATER_KEYS.get(name, ())}
        sections[name] = value
    blob = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_marker(stage_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((stage_dir / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def gguf_check_record(base: Path, cfg: TrainerConfig, imatrix: bool) -> Path | None:
    """Where a passed GGUF check of this base is remembered (None without a cache folder): keyed by
    the base's files except its weights (the checks read none), the settings they read and the
    library versions, so a restarted run or a sweep over one base checks it once."""
    if not cfg.cache_dir:
        return None
    from trainer.preflight import versions

    weights = {".safetensors", ".bin", ".pt", ".pth", ".gguf"}
    files = {
        str(path.relative_to(base)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(base.rglob("*"))
        if path.is_file() and path.suffix not in weights
    }
    blob = json.dumps(
        [files, cfg.model.gguf_pre_tokenizer, cfg.name, imatrix, versions(), sys.executable], sort_keys=True
    )
    return (
        Path(cfg.cache_dir).expanduser()
        / "gguf-checks"
        / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"
    )


class Runner:
    def __init__(self, cfg: TrainerConfig, raw_cfg: DictConfig, run_dir: Path, console: Console) -> None:
        self.cfg = cfg
        self.raw_cfg = raw_cfg
        self.run_dir = run_dir
        self.console = console

    def _upstream_ids(self, stage: Stage) -> dict[str, str | None]:
        ids: dict[str, str | None] = {}
        for upstream in STAGE_ORDER[: STAGE_ORDER.index(stage)]:
            marker = read_marker(self.run_dir / upstream.value)
            ids[upstream.value] = marker["run_id"] if marker else None
        return ids

    def why_not_done(self, stage: Stage) -> str | None:
        """None when the stage's folder is current; otherwise the reason it must run."""
        marker = read_marker(self.run_dir / stage.value)
        if marker is None:
            return "not run yet"
        if marker.get("fingerprint") != fingerprint(self.raw_cfg, stage):
            return "its config changed"
        if marker.get("inputs") != self._upstream_ids(stage):
            return "an upstream stage ran again"
        return None

    @staticmethod
    def _missing(stage: Stage, upstream: Stage, reason: str, selected: list[Stage]) -> TrainerError:
        return TrainerError(
            f"stage '{stage.value}' needs stage '{upstream.value}', which is not done ({reason}) and not "
            f"in stages={[s.value for s in selected]}. Add it: stages=[{upstream.value},{stage.value}]"
        )

    def _decide(self, stage: Stage, selected: list[Stage], first_forced: int) -> str | None:
        """Why the stage must run (None: it is done); raises when an unselected upstream is missing."""
        for upstream in STAGE_ORDER[: STAGE_ORDER.index(stage)]:
            if upstream not in selected and (reason := self.why_not_done(upstream)) is not None:
                raise self._missing(stage, upstream, reason, selected)
        return "forced" if STAGE_ORDER.index(stage) >= first_forced else self.why_not_done(stage)

    def _refuse_missing_upstreams(self, selected: list[Stage], runs: list[Stage]) -> None:
        """Every stage that will run finds each unselected upstream done, now and once the stages
        before it have run: checked before the first stage, so `stages=[data,train,merge,evaluate]`
        is refused for its missing quantize before training, not after it."""
        for stage in runs:
            for upstream in STAGE_ORDER[: STAGE_ORDER.index(stage)]:
                if upstream in selected:
                    continue
                reason = self.why_not_done(upstream)
                rerun = [r.value for r in runs if STAGE_ORDER.index(r) < STAGE_ORDER.index(upstream)]
                if reason is None and rerun:
                    reason = f"stage '{rerun[0]}' runs again before it"
                if reason is not None:
                    raise self._missing(stage, upstream, reason, selected)

    def pending(self, selected: list[Stage], first_forced: int) -> list[Stage]:
        """The selected stages this run will execute: from the first one not done, every later one."""
        for index, stage in enumerate(selected):
            if self._decide(stage, selected, first_forced) is not None:
                return selected[index:]
        return []

    def _preflight(self, selected: list[Stage], first_forced: int, spread: bool) -> None:
        """Rank 0 checks the plan (every upstream a pending stage needs) and every runtime the pending
        stages need; every rank stops if one cannot run."""
        from trainer import preflight
        from trainer.run_lock import started_by_holder

        failure = None
        # Ranks this runner started itself were checked by their parent.
        if distributed.is_main() and not started_by_holder(self.run_dir):
            try:
                pending = self.pending(selected, first_forced)
                self._refuse_missing_upstreams(selected, pending)
                if self.cfg.preflight:
                    preflight.require(self.cfg, pending, self.console)
            except TrainerError as exc:
                failure = str(exc)
        if spread:
            failure = distributed.broadcast(failure)
        if failure:
            raise TrainerError(failure)

    def _check_base_model(self) -> None:
        """What the base's own files allow, checked before training rather than after it: each enabled
        artifact against its layers and family, and (with a GGUF artifact) its tokenizer in llama.cpp."""
        from trainer.families import check_base

        base = check_base(self.cfg)
        if (
            base is None
            or Stage.quantize not in self.cfg.stages
            or read_marker(self.run_dir / Stage.quantize.value)
        ):
            return
        ggufs = [
            self.cfg.quantize.artifacts[n]
            for n in self.cfg.quantize.enabled
            if self.cfg.quantize.artifacts[n].format is QuantFormat.gguf
        ]
        if not ggufs:
            return
        imatrix = any(spec.imatrix for spec in ggufs)
        cached = gguf_check_record(base, self.cfg, imatrix)
        if cached is not None and cached.exists():
            log.info("the base's tokenizer and tensor names passed the GGUF checks before (%s)", cached.name)
            return
        from trainer.gguf import check_tensor_names, check_vocabulary

        with library_output("GGUF checks", run_log_file(), self.cfg.verbose):
            if imatrix:
                check_tensor_names(base)
            seconds = check_vocabulary(base, self.cfg.model.gguf_pre_tokenizer, self.cfg.name)
        log.info("the base's tokenizer converts to GGUF and tokenizes as in transformers (%.1f s)", seconds)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps({"base": str(base), "seconds": round(seconds, 1)}) + "\n")

    def run(self) -> list[StageResult]:
        from trainer.modeling import check_base_weights

        check_base_weights(self.cfg.model, self.cfg.cache_dir)  # before any stage spends time
        if distributed.is_main():
            self._check_base_model()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.old-*"):
                shutil.rmtree(stale, ignore_errors=True)
        distributed.barrier()
        selected = [s for s in STAGE_ORDER if s in self.cfg.stages]
        first_forced = min((STAGE_ORDER.index(s) for s in self.cfg.force), default=len(STAGE_ORDER))
        results: list[StageResult] = []
        spread = distributed.is_distributed()
        self._preflight(selected, first_forced, spread)
        for stage in selected:
            if (
                spread
                and stage not in DISTRIBUTED_STAGES
                and STAGE_ORDER.index(stage) > max(STAGE_ORDER.index(s) for s in DISTRIBUTED_STAGES)
            ):
                # Training is over on every rank: rank 0 goes on alone.
                distributed.leave()
                spread = False
                if not distributed.is_main():
                    break
            # Every rank acts on rank 0's reading of the run directory.
            reason = (
                distributed.broadcast(self._decide(stage, selected, first_forced))
                if spread
                else (self._decide(stage, selected, first_forced))
            )
            if reason is None:
                marker = read_marker(self.run_dir / stage.value) or {}
                self.console.print(f"[dim]stage {stage.value}: done, skipped[/dim]")
                results.append(
                    StageResult(stage, "skipped", note="done earlier", summary=marker.get("summary", {}))
                )
                continue
            ranks = distributed.ranks_to_start(
                self.cfg.hardware.distributed.value, self.cfg.hardware.processes
            )
            if stage in DISTRIBUTED_STAGES and not spread and ranks > 1:
                result = self._execute_in_new_ranks(stage, reason, ranks)
            elif not spread:
                result = self._execute(stage, reason)
            elif stage in DISTRIBUTED_STAGES:
                result = self._execute_on_all_ranks(stage, reason)
            else:
                result = self._execute_on_main(stage, reason)
            results.append(result)
            if result.status != "done":
                break
        if spread:
            distributed.leave()
        return results

    def _execute_in_new_ranks(self, stage: Stage, reason: str, ranks: int) -> StageResult:
        """No launcher started this run (a sweep job given several GPUs): start the ranks for this stage."""
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        replaced = ("stages=", "force=", "run_dir=", "hydra.run.dir=")
        overrides = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith(replaced)]
        overrides += [f"hydra.run.dir={self.run_dir}", f"stages=[{stage.value}]", "hydra.output_subdir=null"]
        if reason == "forced":
            overrides.append(f"force=[{stage.value}]")
        config_dir = next(
            (s.path for s in hydra_cfg.runtime.config_sources if s.provider == "command-line"), None
        )
        self.console.rule(f"[bold]stage {stage.value}[/bold] [dim]({reason}; {ranks} ranks)[/dim]")
        started = time.time()
        code = distributed.launch_ranks(ranks, overrides, config_dir)
        marker = read_marker(self.run_dir / stage.value)
        if code != 0 or marker is None:
            raise TrainerError(
                f"stage {stage.value} on {ranks} ranks failed (exit {code}); its log is {self.run_dir}/trainer.log"
            )
        return StageResult(stage, "done", time.time() - started, summary=marker["summary"])

    def _execute_on_main(self, stage: Stage, reason: str) -> StageResult:
        """Rank 0 builds the stage; the other ranks wait, and fail with it."""
        if distributed.is_main():
            try:
                result = self._execute(stage, reason)
            except BaseException as exc:
                distributed.broadcast(f"{type(exc).__name__}: {exc}")
                raise
            return distributed.broadcast(result)
        outcome = distributed.broadcast(None)
        if isinstance(outcome, str):
            raise TrainerError(f"stage {stage.value} failed on rank 0: {outcome}")
        return outcome

    def _execute_on_all_ranks(self, stage: Stage, reason: str) -> StageResult:
        """Every rank runs the stage in rank 0's partial folder; rank 0 alone marks it done."""
        partial = self._open_partial(stage, reason) if distributed.is_main() else None
        partial = distributed.broadcast(partial)
        started = time.time()
        summary = stage_function(stage)(StageContext(self.cfg, self.run_dir, partial, self.console))
        distributed.barrier()
        result = self._close_partial(stage, partial, started, summary) if distributed.is_main() else None
        return distributed.broadcast(result)

    def _open_partial(self, stage: Stage, reason: str) -> Path:
        self.console.rule(f"[bold]stage {stage.value}[/bold] [dim]({reason})[/dim]")
        partial = self.run_dir / f".{stage.value}.partial"
        # What the partial folder was started for, kept beside it so the stage's files stay its own.
        identity_file = self.run_dir / f".{stage.value}.identity"
        identity = json.dumps([fingerprint(self.raw_cfg, stage), self._upstream_ids(stage)])
        resumable = stage in RESUMABLE and partial.exists() and identity_file.exists()
        if resumable and identity_file.read_text() != identity:
            log.warning("discarding the partial %s: its config or inputs changed since", stage.value)
            resumable = False
        if partial.exists() and not resumable:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        identity_file.write_text(identity)
        return partial

    def _execute(self, stage: Stage, reason: str) -> StageResult:
        partial = self._open_partial(stage, reason)
        started = time.time()
        try:
            summary = self._call(stage, StageContext(self.cfg, self.run_dir, partial, self.console))
        except StageNotBuilt as exc:
            shutil.rmtree(partial, ignore_errors=True)
            return StageResult(stage, "not built", time.time() - started, note=str(exc))
        finally:
            memory.release(after=stage.value)
        return self._close_partial(stage, partial, started, summary)

    def _call(self, stage: Stage, context: StageContext) -> dict[str, Any]:
        """The stage, with what its libraries print kept in the run's log (`verbose` shows it)."""
        build = stage_function(stage)
        with library_output(f"stage {stage.value}", run_log_file(), self.cfg.verbose):
            if stage is Stage.data and self.cfg.cache_dir:
                from trainer.data_cache import cached

                section = OmegaConf.to_container(self.raw_cfg.data, resolve=True, enum_to_str=True)
                return cached(build, context, self.cfg.cache_dir, section)
            return build(context)

    def _close_partial(
        self, stage: Stage, partial: Path, started: float, summary: dict[str, Any]
    ) -> StageResult:
        seconds = time.time() - started
        marker = {
            "stage": stage.value,
            "run_id": uuid.uuid4().hex,
            "fingerprint": fingerprint(self.raw_cfg, stage),
            "inputs": self._upstream_ids(stage),
            "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
            "seconds": round(seconds, 3),
            "summary": summary,
        }
        write_json_atomic(partial / MARKER, marker)
        final = self.run_dir / stage.value
        if final.exists():
            old = self.run_dir / f".{stage.value}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            shutil.rmtree(old)
        os.rename(partial, final)
        (self.run_dir / f".{stage.value}.identity").unlink()
        _fsync_dir(self.run_dir)
        log.info("stage %s done in %.1f s", stage.value, seconds)
        return StageResult(stage, "done", seconds, summary=summary)


def summary_table(results: list[StageResult]) -> Table:
    table = Table(title="trainer run")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("summary")
    styles = {"done": "green", "skipped": "dim", "not built": "yellow", "failed": "red"}
    for result in results:
        shown = ", ".join(f"{k}={v}" for k, v in result.summary.items() if not isinstance(v, (dict, list)))
        table.add_row(
            result.stage.value,
            f"[{styles.get(result.status, '')}]{result.status}[/]",
            f"{result.seconds:.1f}" if result.status == "done" else "",
            Text(result.note or shown),
        )
    return table
