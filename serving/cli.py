"""The API deployable: ``python -m serving.cli`` (or ``segue-api``). Settings: ``ApiSettings`` (``SEGUE_API_*``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI

from serving.api import ApiDeps, create_api
from serving.catalog import Catalog
from serving.editorial_api import editorial_from
from serving.explain import Explainer
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.settings import ApiSettings
from streams.errors import SegueError
from streams.metrics import Metrics
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
    rescorer = Rescorer(
        catalog.embeddings,
        ExactRetriever(catalog.embeddings),
        scorer,
        n_candidates=settings.scoring.candidates,
        n_recs=settings.scoring.recommendations,
        explainer=Explainer(scorer, catalog.embeddings, events=settings.scoring.explain_events)
        if settings.scoring.explain
        else None,
    )
    producer = EventProducer.connect(settings.kafka, topic=settings.topics.events) if settings.ingest else None
    store = RedisStore.connect(settings.redis, metrics)
    editorial = editorial_from(
        settings.redis, store, catalog, rescorer, scorer.provider, settings.scoring.rules_refresh_s
    )
    return create_api(
        ApiDeps(settings, store, catalog, rescorer, metrics, scorer.provider, producer, editorial=editorial)
    )


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
