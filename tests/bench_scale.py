"""Scale-out benchmark (not a test): what more worker processes and a database server cost and give.

    python tests/bench_scale.py throughput [--trials 12] [--jobs 1,2,4] [--rounds 2]
    python tests/bench_scale.py storage [--trials 60]
    python tests/bench_scale.py liar [--workers 4] [--trials 48]

``throughput``: the digits search (default space, estimate backend) with 1, 2 and 4 processes
(``--jobs``), each setting run ``--rounds`` times in alternating order on one machine; trials per hour
from the study's own clock (first trial's start to last trial's end, so the teacher and baseline,
cached or not, are left out; a child's start-up is in).

``storage``: the storage work of one real trial (ask with its distributions, its user attrs, a
heartbeat, tell), replayed in memory, on a SQLite file and on PostgreSQL (started here, with
heartbeats as a shared study has them), interleaved trial by trial; milliseconds per trial, and
the projection for N machines that follows from it.

``liar``: optuna #6626 — TPE with ``multivariate`` and ``constant_liar`` across RDB workers. Worker
processes ask, "run" a trial for a while and tell, on PostgreSQL; counts the trials whose parameters
equal those of a trial that was running when they were asked (what constant_liar exists to avoid),
for multivariate on/off and constant_liar on/off.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))


def _postgres():
    from postgres import PostgresServer, postgres_available

    reason = postgres_available()
    if reason:
        sys.exit(f"needs a PostgreSQL here: {reason}")
    root = Path(tempfile.mkdtemp(prefix="autocomp-bench-pg-"))
    return PostgresServer(root).start(), root


# ------------------------------------------------------------------------------------------------ throughput
def throughput(args) -> None:
    import optuna

    from autocomp.study import default_storage, finished_trials

    jobs = [int(j) for j in args.jobs.split(",")]
    rows: dict[int, list[dict]] = {j: [] for j in jobs}
    root = Path(tempfile.mkdtemp(prefix="autocomp-bench-"))
    try:
        for r in range(args.rounds):
            for j in jobs if r % 2 == 0 else list(reversed(jobs)):
                out = root / f"j{j}-r{r}"
                began = time.monotonic()
                done = subprocess.run(
                    [sys.executable, "-m", "autocomp", "search", "--task", "digits", "--device", "local", "--space", "default",
                     "--backend", "estimate", "--trials", str(args.trials), "--jobs", str(j), "--out", str(out),
                     "--study-name", "bench", "--seed", str(r)],
                    capture_output=True, text=True,
                )  # fmt: skip
                if done.returncode != 0:
                    sys.exit(f"search --jobs {j} failed: {done.stderr[-2000:]}")
                study = optuna.load_study(study_name="bench", storage=default_storage(out))
                trials = finished_trials(study)
                first = min(t.datetime_start for t in trials)
                last = max(t.datetime_complete for t in trials)
                wall_s = (last - first).total_seconds()
                row = {
                    "round": r, "jobs": j, "trials": len(trials), "trials_wall_s": wall_s, "command_s": time.monotonic() - began,
                    "trials_per_hour": 3600 * len(trials) / wall_s,
                    "mean_trial_s": statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in trials),
                    "processes": len({t.user_attrs.get("worker") or "lead" for t in trials}),
                }
                rows[j].append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n| processes (--jobs) | trials/hour (each round) | median | x of 1 | mean trial s | cores {os.cpu_count()} |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(r["trials_per_hour"] for r in rows[jobs[0]])
    for j in jobs:
        rates = [r["trials_per_hour"] for r in rows[j]]
        med = statistics.median(rates)
        print(
            f"| {j} | {', '.join(f'{x:.0f}' for x in rates)} | {med:.0f} | {med / base:.2f} | "
            f"{statistics.median(r['mean_trial_s'] for r in rows[j]):.1f} | |"
        )


# --------------------------------------------------------------------------------------------------- storage
def _replay_one(study, trial_like, distributions) -> float:
    began = time.perf_counter()
    trial = study.ask(distributions)
    for key, value in trial_like.user_attrs.items():
        trial.set_user_attr(key, value)
    if study._storage.get_heartbeat_interval() if hasattr(study._storage, "get_heartbeat_interval") else None:
        study._storage.record_heartbeat(trial._trial_id)
    study.tell(trial, trial_like.values)
    return time.perf_counter() - began


def storage(args) -> None:
    import optuna

    from autocomp.storage import shared_storage
    from autocomp.study import DIRECTIONS, default_storage, finished_trials, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="autocomp-bench-"))
    server, pg_root = _postgres()
    try:
        out = root / "source"
        subprocess.run(
            [sys.executable, "-m", "autocomp", "search", "--task", "digits", "--device", "local", "--space", "default",
             "--backend", "estimate", "--trials", "3", "--out", str(out), "--study-name", "src", "--seed", "0"],
            check=True, capture_output=True,
        )  # fmt: skip
        source = finished_trials(optuna.load_study(study_name="src", storage=default_storage(out)))
        model = next(t for t in source if t.state.name == "COMPLETE")
        distributions = model.distributions
        print(f"one trial's storage work: {len(distributions)} parameters, {len(model.user_attrs)} user attrs "
              f"({len(json.dumps(model.user_attrs))} bytes of JSON)")
        storages = {
            "none (in memory)": optuna.storages.InMemoryStorage(),
            "SQLite file": optuna.storages.RDBStorage(f"sqlite:///{root / 'bench.db'}"),
            "PostgreSQL (heartbeats)": shared_storage(server.url, grace_s=120),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for sampler_name in ("random", "tpe"):  # random: the storage alone; tpe: what a search asks (it reads every trial)
            studies = {
                name: optuna.create_study(
                    storage=s, study_name=f"bench-{sampler_name}", directions=list(DIRECTIONS),
                    sampler=make_sampler(sampler_name, seed=0, parallel=True),
                )
                for name, s in storages.items()
            }
            for _ in range(args.trials):  # interleaved: each storage sees the same moments of a noisy host
                for name, study in studies.items():
                    times.setdefault((sampler_name, name), []).append(_replay_one(study, model, distributions))
        print("\n| sampler | storage | ms per trial, median | first 10 | last 10 | trials |")
        print("|---|---|---|---|---|---|")
        for (sampler_name, name), values in times.items():
            print(
                f"| {sampler_name} | {name} | {1000 * statistics.median(values):.1f} | {1000 * statistics.median(values[:10]):.1f} | "
                f"{1000 * statistics.median(values[-10:]):.1f} | {len(values)} |"
            )
        pg_s = statistics.median(times[("random", "PostgreSQL (heartbeats)")])
        print(f"\nprojection: a trial of W seconds on each of N machines gives N * 3600 / (W + {pg_s:.3f}) trials/hour; "
              f"even done one trial at a time, the database keeps up with 3600 / {pg_s:.3f} = {3600 / pg_s:.0f} trials/hour "
              f"of this work (the figure includes the client's round trips, so the server's own share is smaller)")
    finally:
        server.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ liar
CHOICES = [0.0, 0.25, 0.5, 0.75]


def _liar_worker(url: str, name: str, multivariate: bool, liar: bool, trials: int, seed: int, run_s: float) -> None:
    import warnings

    import optuna

    from autocomp.storage import engine_url

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=multivariate, constant_liar=liar)
    study = optuna.load_study(study_name=name, storage=engine_url(url), sampler=sampler)
    dists = {f"p{i}": optuna.distributions.CategoricalDistribution(CHOICES) for i in range(4)}
    for _ in range(trials):
        trial = study.ask(dists)
        time.sleep(run_s)
        x = [trial.params[f"p{i}"] for i in range(4)]
        study.tell(trial, [sum((v - 0.5) ** 2 for v in x), sum(abs(v - 0.25) for v in x)])


def liar(args) -> None:
    import optuna

    from autocomp.storage import engine_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    server, pg_root = _postgres()
    try:
        print(f"{args.workers} processes x {args.trials // args.workers} trials of {args.run_s} s, 4 categorical parameters "
              f"of {len(CHOICES)} choices ({len(CHOICES) ** 4} plans), 2 objectives, TPE n_startup_trials=8")
        print("\n| multivariate | constant_liar | trials | asked while an equal plan ran | share |")
        print("|---|---|---|---|---|")
        for rep in range(args.rounds):
            for multivariate, constant_liar in ((True, True), (True, False), (False, True), (False, False)):
                name = f"liar-{multivariate}-{constant_liar}-{rep}"
                optuna.create_study(study_name=name, storage=engine_url(server.url), directions=["minimize", "minimize"])
                procs = [
                    multiprocessing.Process(target=_liar_worker, args=(server.url, name, multivariate, constant_liar, args.trials // args.workers, 100 * rep + w, args.run_s))
                    for w in range(args.workers)
                ]
                for p in procs:
                    p.start()
                for p in procs:
                    p.join()
                trials = optuna.load_study(study_name=name, storage=engine_url(server.url)).get_trials()
                clashes = sum(
                    1 for t in trials if t.number >= 8 and any(
                        o.number != t.number and o.params == t.params
                        and o.datetime_start <= t.datetime_start <= o.datetime_complete for o in trials
                    )
                )
                counted = sum(1 for t in trials if t.number >= 8)
                print(f"| {multivariate} | {constant_liar} | {counted} | {clashes} | {clashes / counted:.0%} |", flush=True)
    finally:
        server.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--trials", type=int, default=12)
    t.add_argument("--jobs", default="1,2,4")
    t.add_argument("--rounds", type=int, default=2)
    s = sub.add_parser("storage")
    s.add_argument("--trials", type=int, default=60)
    q = sub.add_parser("liar")
    q.add_argument("--workers", type=int, default=4)
    q.add_argument("--trials", type=int, default=48)
    q.add_argument("--run-s", type=float, default=0.5)
    q.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    {"throughput": throughput, "storage": storage, "liar": liar}[args.what](args)


if __name__ == "__main__":
    main()
