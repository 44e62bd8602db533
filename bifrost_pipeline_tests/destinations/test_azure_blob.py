"""The `azure_blob` destination against Azurite (azure-storage-blob over HTTP, as against Azure)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from bifrost_pipeline.config import ConfigError, parse_config
from bifrost_pipeline.destinations import destination_class
from bifrost_pipeline.destinations.azure_blob import AzureBlobConfig, AzureBlobDestination
from bifrost_pipeline_tests.destinations import object_store_cases as cases
from bifrost_pipeline_tests.destinations.context import context
from bifrost_pipeline_tests.emulators.object_stores import AZURITE_ACCOUNT, AZURITE_KEY
from bifrost_pipeline_tests.emulators.servers import free_port

pytestmark = pytest.mark.usefixtures("no_cloud_metadata")
_names = itertools.count()


def make(container: str, **config) -> AzureBlobDestination:
    return AzureBlobDestination(
        AzureBlobConfig.model_validate({"container": container, **config}), context("e")
    )


def service(azurite):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def store(azurite) -> cases.Store:
    svc = service(azurite)

    def new_container() -> str:
        name = f"container-{next(_names)}"
        svc.create_container(name)
        return name

    def objects(container: str, under: str) -> dict[str, bytes]:
        c = svc.get_container_client(container)
        return {b.name: c.download_blob(b.name).readall() for b in c.list_blobs(name_starts_with=under)}

    def make_with_key(container: str, **kw):
        return make(
            container, account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY, endpoint=azurite.account_url, **kw
        )

    return cases.Store("azure_blob", "az://" + AZURITE_ACCOUNT + "/{bucket}", make_with_key, objects, new_container)


@pytest.mark.parametrize("fmt, codec", cases.FORMATS)
def test_every_format_and_compression_round_trips(store, tmp_path, fmt, codec):
    cases.check_round_trip(store, tmp_path, fmt, codec)


def test_rematerializing_leaves_only_the_new_run_and_the_manifest_last(store, tmp_path):
    cases.check_rematerialize(store, tmp_path)


def test_large_files_go_up_in_blocks(store, azurite, tmp_path):
    container = store.new_bucket()
    out = cases.big_file_output(tmp_path, 3 * 1024 * 1024 + 5)
    store.make(container, prefix="big/", max_single_put_mb=1, max_block_size_mb=1, max_concurrency=2).write_partition(out)
    blob = service(azurite).get_blob_client(container, "big/request_logs.parquet")
    committed, _ = blob.get_block_list("committed")
    assert len(committed) == 4  # 1 + 1 + 1 MiB + 5 bytes, committed at once
    assert blob.download_blob().readall() == out.files[0].path.read_bytes()


def test_connection_string_and_sas_token_work(store, azurite, tmp_path):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container = store.new_bucket()
    by_string = make(container, connection_string=azurite.connection_string, prefix="cs/")
    assert by_string.describe() == f"az://{AZURITE_ACCOUNT}/{container}/cs/"  # no key in it
    assert by_string.write_partition(cases.output(tmp_path / "a")).location == f"az://{AZURITE_ACCOUNT}/{container}/cs/"
    sas = generate_container_sas(
        AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, delete=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    by_sas = make(container, account_name=AZURITE_ACCOUNT, account_url=azurite.account_url, sas_token="?" + sas, prefix="sas/")
    by_sas.write_partition(cases.output(tmp_path / "b"))
    landed = store.objects(container, "")
    assert {"cs/_manifest.json", "sas/_manifest.json", "sas/request_logs.parquet"} <= set(landed)


def test_a_missing_container_is_named(store, tmp_path):
    cases.expect_error(
        store.make("no-such-container", prefix=cases.PREFIX),
        cases.output(tmp_path),
        f"az://{AZURITE_ACCOUNT}/no-such-container/e/2024/01/15/",
        "container 'no-such-container' does not exist",
    )


def test_a_wrong_account_key(store, azurite, tmp_path):
    container = store.new_bucket()
    wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="
    dest = make(container, account_name=AZURITE_ACCOUNT, account_key=wrong, endpoint=azurite.account_url)
    message = cases.expect_error(dest, cases.output(tmp_path), f"az://{AZURITE_ACCOUNT}/{container}/", "credentials were rejected")
    assert wrong not in message


def test_a_read_only_sas_is_denied(store, azurite, tmp_path):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container = store.new_bucket()
    sas = generate_container_sas(
        AZURITE_ACCOUNT, container, account_key=AZURITE_KEY, permission=ContainerSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    dest = make(container, account_url=azurite.account_url, sas_token=sas)
    message = cases.expect_error(dest, cases.output(tmp_path), "access denied", "Storage Blob Data Contributor")
    assert sas not in message and sas.split("sig=")[-1] not in message


def test_an_unreachable_endpoint_is_retryable(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    dest = make("ccc", account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY, endpoint=url, max_attempts=1)
    message = cases.expect_error(dest, cases.output(tmp_path), f"cannot reach {url}", retryable=True)
    assert AZURITE_KEY not in message


def test_seed_keys_load_unchanged_and_secrets_stay_hidden():
    raw = {"log_exports": {"exports": [{
        "name": "azure_seed",
        "schedule": {"frequency": "daily", "time": "02:00", "timezone": "UTC"},
        "destination": {"type": "azure_blob", "config": {
            "container": "bifrost-logs",
            "account_name": "${AZURE_ACCOUNT_NAME}",
            "account_key": "${AZURE_ACCOUNT_KEY}",
            "prefix": "logs/{year}/{month}/{day}/",
        }},
    }]}}
    app = parse_config(raw, env={"AZURE_ACCOUNT_NAME": "bifrostlogs", "AZURE_ACCOUNT_KEY": "c2VjcmV0LWtleQ=="})
    (export,) = app.exports
    assert destination_class("azure_blob") is AzureBlobDestination
    cfg = export.destination.config
    assert (cfg.container, cfg.account_name) == ("bifrost-logs", "bifrostlogs")
    assert cfg.account_key.get_secret_value() == "c2VjcmV0LWtleQ==" and "c2VjcmV0LWtleQ==" not in repr(app)
    dest = AzureBlobDestination(cfg, app.destination_context("azure_seed"))
    assert dest.describe() == "az://bifrostlogs/bifrost-logs/logs/{year}/{month}/{day}/"


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"container": "ccc"}, "set account_name (or account_url, or connection_string)"),
        ({"container": "ccc", "account_name": "a", "account_key": "k", "sas_token": "s"}, "set one of"),
        ({"container": "cc1", "account_url": "http://127.0.0.1:1/x", "account_key": "k"}, "account_key needs account_name"),
        ({"container": "Bifrost_Logs", "account_name": "a"}, "not a valid name"),
    ],
)
def test_config_errors(config, expected):
    raw = {"log_exports": {"exports": [{
        "name": "e", "schedule": {"frequency": "daily", "time": "02:00"},
        "destination": {"type": "azure_blob", "config": config},
    }]}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={})
    text = "\n".join(err.value.problems)
    assert "log_exports.exports[0].destination.config" in text and expected in text


def test_the_docs_example_loads():
    cfg = cases.check_doc_example("azure_blob", {"AZURE_ACCOUNT_NAME": "bifrostlogs", "AZURE_ACCOUNT_KEY": "a2V5"})
    assert cfg.account_name == "bifrostlogs" and cfg.container == "bifrost-logs"


def test_a_large_file_is_never_held_whole_in_memory(store, tmp_path):
    dest = store.make(store.new_bucket(), prefix="mem/", max_single_put_mb=4, max_block_size_mb=4, max_concurrency=2)
    cases.check_upload_streams(dest, tmp_path, size_mb=48, limit_mb=24)


def test_a_failing_store_is_retried_with_backoff_then_flagged_retryable(busy_store, tmp_path):
    url = f"{busy_store.url}/{AZURITE_ACCOUNT}"
    dest = make("ccc", account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY, endpoint=url, max_attempts=3,
                retry_backoff_s=0.2, retry_backoff_base=1)
    cases.expect_error(dest, cases.output(tmp_path), "the store failed (503)", retryable=True)
    assert busy_store.requests == 3


def test_run_export_publishes_through_the_core(store, azurite, tmp_path):
    container = store.new_bucket()
    destination = {"type": "azure_blob", "config": {
        "container": container, "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
        "endpoint": azurite.account_url, "prefix": "core/{year}/{month}/{day}/",
    }}
    cases.check_run_export(store, tmp_path, destination)


def test_count_rows_reads_the_manifest_and_object_sizes_back(store, tmp_path):
    cases.check_count_rows(store.make(store.new_bucket(), prefix=cases.PREFIX), tmp_path)
