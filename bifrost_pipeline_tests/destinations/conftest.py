import pytest

from bifrost_pipeline_tests.destinations import warehouse_data as wd


@pytest.fixture(scope="session")
def million_file(tmp_path_factory):
    """One million request records in one Parquet file, built once for every warehouse's load test."""
    (f,) = wd.million_partition("big", tmp_path_factory.mktemp("million")).files
    return f
