"""The API deployable: ``python -m serving.cli`` (or ``segue-api``). Settings: ``ApiSettings`` (``SEGUE_API_*``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI

from serving.api import ApiDeps, create_api
from serving.bias import session_bias
from serving.candidates import CandidateSource
from serving.catalog import Catalog
from serving.editorial_api import editorial_from
from serving.explain import REASON_CODES, Explainer
from serving.intent import SessionIntent
from serving.rescore import Rescorer
from serving.retrieval import make_retriever
from serving.scorer import OnnxScorer
from serving.separation import artist_codes
from serving.session_blend import load_neighbours
from serving.settings import ApiSettings
from serving.steer_api import Steering
from serving.steering import FeatureMap, PromptReader, catalog_features
from serving.text_encoder import TextEncoder
from streams.errors import ModelError, SegueError
from streams.metrics import Metrics
from streams.pipeline import now_ms
from streams.recs_codec import RecsCodec
from streams.sdk import EventProducer
from streams.stores import RedisStore

log = logging.getLogger("segue.api")


def build_api(settings: ApiSettings) -> FastAPI:
    """Load the model bundle, connect Redis (and Kafka when ingest is on) and build the app."""
    metrics = Metrics.create()
    catalog = Catalog.load(settings.scoring.model_dir)
    scorer = OnnxScorer.load(
        settings.scoring.model_dir, device=settings.scoring.device, intra_op_threads=settings.scoring.intra_op_threads
    )
    metrics.model_info.labels(scorer.model_version, scorer.provider).set(1)
    retriever = make_retriever(catalog.embeddings, settings.scoring.retriever, settings.scoring.retriever_nprobe)
    rescorer = Rescorer(
        catalog.embeddings,
        retriever,
        scorer,
        n_candidates=settings.scoring.candidates,
        n_recs=settings.scoring.recommendations,
        candidates=CandidateSource(catalog.embeddings, retriever, settings.scoring.repeats),
        explainer=Explainer(scorer, catalog.embeddings, events=settings.scoring.explain_events)
        if settings.scoring.explain
        else None,
        artists=artist_codes(catalog.artist_of),
        intent=SessionIntent(catalog.embeddings, catalog.genre_of),
        neighbours=load_neighbours(settings.scoring.model_dir),
    )
    producer = EventProducer.connect(settings.kafka, topic=settings.topics.events) if settings.ingest else None
    # Lists the API ranks on demand are stored compactly too (recommendations v2, docs/state.md).
    codec = RecsCodec(catalog.track_ids, catalog.model_version, REASON_CODES)
    store = RedisStore.connect(settings.redis, metrics, codec)
    scoring = settings.scoring
    bias = session_bias(scoring, settings.redis, catalog.model_version, index_refresh_ms=None)  # no stale steers
    steering = None
    if scoring.steering and bias is not None and bias.steers is not None:
        try:
            fmap = FeatureMap.fit(catalog_features(scoring.model_dir), catalog.embeddings)
        except ModelError as exc:  # a catalog without audio features: serve, but without the steer routes
            log.warning("steering by prompt is off: %s", exc)
        else:
            steering = Steering(
                load_reader=lambda: PromptReader(TextEncoder.load()),
                fmap=fmap,
                store=bias.steers,
                model_version=catalog.model_version,
                default_ttl_s=settings.steer_default_ttl_s,
                clock=now_ms,
            )
    editorial = editorial_from(
        settings.redis, store, catalog, rescorer, scorer.provider, settings.scoring.rules_refresh_s
    )
    deps = ApiDeps(
        settings, store, catalog, rescorer, metrics, scorer.provider, producer, bias, steering, editorial=editorial
    )
    return create_api(deps)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the API until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ApiSettings()
    try:
        app = build_api(settings)
    except SegueError as exc:
        log.error("%s", exc)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
