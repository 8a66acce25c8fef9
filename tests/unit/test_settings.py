from pathlib import Path

from infra.settings_doc import render
from serving.settings import ApiSettings
from streams.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_page_lists_every_setting():
    committed = (ROOT / "docs/configuration.md").read_text()
    assert committed == render(), "regenerate it: python -m infra.settings_doc > docs/configuration.md"


def test_nested_environment_variables(monkeypatch):
    monkeypatch.setenv("SEGUE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("SEGUE_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SEGUE_TOPICS__PARTITIONS", "16")
    monkeypatch.setenv("SEGUE_API_REDIS__URL", "rediss://redis:6380/0")
    worker = WorkerSettings()
    assert worker.kafka.servers == ["k1:9092", "k2:9092"]
    assert worker.topics.partitions == 16
    assert "s3cret" not in repr(worker)
    assert ApiSettings().redis.url == "rediss://redis:6380/0"


def test_sasl_settings_reach_the_kafka_client():
    worker = WorkerSettings.model_validate(
        {
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "u",
                "sasl_password": "p",
            }
        }
    )
    kw = worker.kafka.kafka_python_kwargs()
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_plain_password"] == "p"


def test_the_worker_app_takes_its_producer_batch_size_from_the_settings(monkeypatch, tmp_path):
    from streams.app import create_app

    monkeypatch.setenv("SEGUE_KAFKA__PRODUCER_MAX_BATCH_BYTES", "65536")
    app = create_app(WorkerSettings(data_dir=tmp_path))
    assert app.conf.producer_max_batch_size == 65536
    monkeypatch.delenv("SEGUE_KAFKA__PRODUCER_MAX_BATCH_BYTES")
    assert create_app(WorkerSettings(data_dir=tmp_path)).conf.producer_max_batch_size == 524_288
