"""What a search and a worker both build before the first trial: the task, the device as deployed, the
backends, the space and the baseline. A search builds it from its arguments; a worker from the settings
the search stored in the study, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocomp.events import Events, Quiet

AUTO_SPACE = "auto"


@dataclass
class Setup:
    """Call order: ``load`` (checks every input, no work), ``teacher``, ``space_for``, ``prepare``."""

    task: Any
    profile: Any
    backend: Any
    estimator: Any
    backend_name: str
    space_name: str
    space: Any  # None for space "auto", until ``space_for``
    events: Events
    server: Any = None  # the server's DeviceProfile and the link to it: a split is priced across them
    link: Any = None

    @classmethod
    def load(
        cls, *, task: str, device: Any, space: str, backend: str, threads: int | None, storage: str, events: Events | None = None,
        server: str | None = None, link: str | None = None,
    ) -> "Setup":
        """``device``: a profile name or a ``DeviceProfile`` (the CLI's --board options already applied);
        ``storage``: the study's database (a board pool's leases live there); ``server`` and ``link``: a
        device profile and a link profile, both or neither, that price a split (``latency.split``)."""
        from autocomp.errors import ConfigError
        from autocomp.links import load_link

        from autocomp.latency import get_backend
        from autocomp.profiles import load_profile, with_threads
        from autocomp.search_space import load_space
        from autocomp.tasks import load_task

        profile = with_threads(load_profile(device) if isinstance(device, str) else device, threads)
        if (server is None) != (link is None):
            raise ConfigError("a split is priced across a server and a link: give --server and --link together")
        return cls(
            server=None if server is None else load_profile(server), link=None if link is None else load_link(link),
            profile=profile, backend=get_backend(backend, profile=profile, leases_url=storage), estimator=get_backend("estimate", profile=profile),
            backend_name=backend, space_name=space, space=None if space == AUTO_SPACE else load_space(space),
            task=load_task(task),  # last: the checks above cost nothing, a task file may import torch
            events=events or Quiet(),
        )

    def teacher(self):
        from autocomp.tasks import task_name

        with self.events.status(f"preparing {task_name(self.task)} (the first run trains the built-in model, about a minute)"):
            return self.task.build_model()

    def space_for(self, teacher) -> tuple[str, Any]:
        """The space's name (as stored) and the space; ``auto`` is resolved for this model."""
        if self.space is not None:
            return self.space_name, self.space
        from autocomp.compress.heads import attention_blocks

        name, space = auto_space(teacher)
        if name != "default":
            self.events.say(f"search space: {name} (the model has {len(attention_blocks(teacher))} self-attention modules; --space picks another)")
        return name, space

    def prepare(
        self, study, teacher, space, *, out_dir: Path, settings: dict[str, Any], seed: int,
        latency_budget_ms: float | None, join: bool = False,
    ):
        """The context of this process's trials and the study's baseline (evaluated once per study).

        ``join``: a worker takes the stored baseline and floor as they are and writes nothing.
        """
        from autocomp.objective import SearchContext
        from autocomp.profiles import calibration_mismatch, runtime_text
        from autocomp.study import prepare_study, joined_study

        self.events.say(f"optimizing for {self.profile.name} as it is deployed: {runtime_text(self.profile.runtime)}")
        mismatch = calibration_mismatch(self.profile) if self.backend_name == "estimate" else None
        if mismatch:
            self.events.say(mismatch, warning=True)
        backend, estimator = self.backend, self.estimator
        if self.link is not None:  # the files a split plan marks are priced end to end, device + link + server
            from autocomp.latency import get_backend
            from autocomp.latency.split import SplitBackend

            far = get_backend("estimate", profile=self.server)
            backend, estimator = (SplitBackend(b, far, self.server, self.link) for b in (backend, estimator))
            self.events.say(f"a split is priced: {self.profile.name} → {self.link.name} ({self.link.bandwidth_mbps:g} Mbit/s, "
                            f"{self.link.rtt_ms:g} ms round trip) → {self.server.name} (estimated)")
        ctx = SearchContext(
            task=self.task, teacher=teacher, space=space, profile=self.profile, backend=backend,
            estimator=estimator, out_dir=out_dir, accuracy_floor=None, latency_budget_ms=latency_budget_ms, seed=seed,
        )
        if join:
            ctx, baseline = joined_study(ctx, study)
        else:
            with self.events.status("evaluating the uncompressed baseline"):
                ctx, baseline = prepare_study(ctx, study, settings=settings, min_accuracy=settings["min_accuracy"])
            if self.link is not None:  # what the report re-prices the trials over, and the cuts it charts
                _record_split(study, baseline, device=(self.estimator, self.profile), server=self.server, link=self.link)
        self.events.say(
            f"baseline: accuracy {100 * baseline.accuracy:.2f}%, latency {baseline.latency_ms:.3f} ms "
            f"({baseline.latency_source}), {baseline.size_bytes / 1e3:.1f} kB"
            + (f" ({baseline.zip_bytes / 1e3:.1f} kB deflated)" if baseline.zip_bytes else "")
            + f"; floor {100 * ctx.accuracy_floor:.2f}%"
        )
        return ctx, baseline


def _record_split(study, baseline, *, device, server, link) -> None:
    """Once per study: the link, and every way to split the uncompressed model with its parts estimated (the
    report's chart of what each cut sends and costs; ``split.time_parts``)."""
    import tempfile

    from autocomp.latency import get_backend
    from autocomp.record import StudyRecord
    from autocomp.split import time_parts

    if StudyRecord.of(study).cuts is not None:
        return
    with tempfile.TemporaryDirectory(prefix="autocomp-cuts-") as work:
        parts = time_parts(Path(baseline.artifact), device=device, server=(get_backend("estimate", profile=server), server),
                           wire="fp32", work_dir=Path(work))
    cuts = [{"name": p.cut, "bytes_fp32": p.bytes_sent, "edge_ms": p.edge_ms, "server_ms": p.server_ms} for p in parts]
    numbers = {k: getattr(link, k) for k in ("name", "description", "bandwidth_mbps", "rtt_ms", "error_pct", "source", "cost_per_mb")}
    StudyRecord.put(study, link=numbers, cuts=cuts)


def auto_space(teacher) -> tuple[str, Any]:
    """Space "auto": the transformer space for a model with self-attention modules, else the default one."""
    from autocomp.compress.heads import attention_blocks
    from autocomp.search_space import load_space

    name = "transformer" if attention_blocks(teacher) else "default"
    return name, load_space(name)
