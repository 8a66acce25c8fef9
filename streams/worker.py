"""The worker deployable: ``python -m streams.worker`` (or ``segue-worker``).

Reads ``WorkerSettings`` from the environment, creates the topics, loads the model bundle, connects to
Redis, serves ``/metrics`` and runs the Faust agent until stopped (SIGINT/SIGTERM).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import faust
from prometheus_client import CollectorRegistry, start_http_server
from threadpoolctl import threadpool_limits

from serving.bias import session_bias
from serving.candidates import CandidateSource
from serving.catalog import Catalog
from serving.explain import REASON_CODES, Explainer
from serving.faults import SlowScorer
from serving.intent import SessionIntent
from serving.prefs_store import RedisPreferencesStore
from serving.rescore import Rescorer, Scorer
from serving.retrieval import make_retriever
from serving.rules_store import RedisRulesStore, RulesCache
from serving.scorer import OnnxScorer
from serving.separation import artist_codes
from serving.session_blend import load_neighbours
from streams.agents import AgentDeps, register_agents
from streams.app import create_app
from streams.errors import SegueError
from streams.metrics import Metrics
from streams.pipeline import Processor
from streams.recs_codec import RecsCodec
from streams.session import Dynamics, SessionState
from streams.settings import WorkerSettings
from streams.stores import RedisStore
from streams.topics import ensure_topics

log = logging.getLogger("segue.worker")


@dataclass(frozen=True)
class Runtime:
    """The worker's collaborators, built once from settings."""

    settings: WorkerSettings
    metrics: Metrics
    catalog: Catalog
    scorer: OnnxScorer
    processor: Processor


def dynamics_from(settings: WorkerSettings) -> Dynamics:
    """Session dynamics from settings."""
    s = settings.session
    return Dynamics(gap_ms=int(s.gap_s * 1000), recent_max=s.recent_tracks, dedup_max=s.dedup_ids)


def limit_blas_threads(threads: int) -> None:
    """Cap numpy's BLAS thread pool for this process (``0``: leave it as the environment set it).

    The worker's matrix products are small (a few hundred users at a time); a pool of one thread per core
    spins between them and cost 2.1x the CPU per event in ``loadtests/batch_cost.py`` on two cores."""
    if threads > 0:
        threadpool_limits(limits=threads, user_api="blas")


def build_rescorer(settings: WorkerSettings, catalog: Catalog, model: Scorer) -> Rescorer:
    """The worker's ranking step for ``model`` (retrieval, candidates, explanations, separation, intent), as
    the settings ask; also what ``loadtests/batch_cost.py`` measures."""
    scoring = settings.scoring
    retriever = make_retriever(catalog.embeddings, scoring.retriever, scoring.retriever_nprobe)
    return Rescorer(
        catalog.embeddings,
        retriever,
        model,
        n_candidates=settings.scoring.candidates,
        n_recs=settings.scoring.recommendations,
        candidates=CandidateSource(catalog.embeddings, retriever, repeats=scoring.repeats),
        explainer=Explainer(model, catalog.embeddings, dynamics_from(settings), scoring.explain_events)
        if scoring.explain
        else None,
        artists=artist_codes(catalog.artist_of),
        intent=SessionIntent(catalog.embeddings, catalog.genre_of),
        neighbours=load_neighbours(scoring.model_dir),
    )


def build_runtime(settings: WorkerSettings, registry: CollectorRegistry | None = None) -> Runtime:
    """Load the model bundle and connect the store; raise a ``SegueError`` that says what to fix."""
    limit_blas_threads(settings.scoring.blas_threads)
    metrics = Metrics.create(registry)
    catalog = Catalog.load(settings.scoring.model_dir)
    scorer = OnnxScorer.load(
        settings.scoring.model_dir,
        device=settings.scoring.device,
        intra_op_threads=settings.scoring.intra_op_threads,
    )
    metrics.model_info.labels(scorer.model_version, scorer.provider).set(1)
    scoring = settings.scoring
    model = SlowScorer(scorer, scoring.inject_delay_ms / 1000) if scoring.inject_delay_ms > 0 else scorer
    rescorer = build_rescorer(settings, catalog, model)
    codec = RecsCodec(catalog.track_ids, catalog.model_version, REASON_CODES)
    store = RedisStore.connect(settings.redis, metrics, codec)
    processor = Processor(
        catalog,
        rescorer,
        store,
        metrics,
        scorer.provider,
        dynamics_from(settings),
        rescore_timeout_s=scoring.rescore_timeout_ms / 1000,
        model_batch=scoring.model_batch,
        slot_users=scoring.slot_users,
        preferences=RedisPreferencesStore.connect(settings.redis),
        rules=RulesCache(
            RedisRulesStore.connect(settings.redis), catalog.index, catalog.artist_of, scoring.rules_refresh_s
        ),
        bias=session_bias(settings.scoring, settings.redis, catalog.model_version),
    )
    # Warm the model up: ONNX Runtime's first run allocates and plans, and would overrun the first batch's
    # rescoring slot.
    rescorer.rank([SessionState.empty(catalog.dim)], [0])
    return Runtime(settings, metrics, catalog, scorer, processor)


def build_app(runtime: Runtime) -> faust.App:
    """The Faust app with the agent registered and partition assignment exported as a metric."""
    app = create_app(runtime.settings)
    register_agents(app, AgentDeps(runtime.processor, runtime.metrics, runtime.settings))
    events_topic = runtime.settings.topics.events
    gauge = runtime.metrics.assigned_partitions

    @app.on_partitions_assigned.connect
    async def _assigned(sender: object, assigned: set, **kwargs: object) -> None:  # noqa: ARG001
        gauge.set(sum(1 for tp in assigned if tp.topic == events_topic))

    @app.on_partitions_revoked.connect
    async def _revoked(sender: object, revoked: set, **kwargs: object) -> None:  # noqa: ARG001
        gauge.set(0)
        runtime.metrics.consumer_lag.clear()  # partitions this worker no longer owns report no lag

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until interrupted."""
    settings = WorkerSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ensure_topics(settings.kafka, settings.topics)
        runtime = build_runtime(settings)
    except SegueError as exc:
        log.error("%s", exc)
        return 2
    server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=runtime.metrics.registry)
    log.info(
        "worker up: model %s on %s, metrics on http://%s:%d/metrics",
        runtime.scorer.model_version,
        runtime.scorer.provider,
        settings.metrics_host,
        server.server_port,
    )
    app = build_app(runtime)
    worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
