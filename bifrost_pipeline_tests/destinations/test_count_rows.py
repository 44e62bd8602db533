"""`count_rows` of the two embedded destinations (the emulated stores have theirs in their own modules)."""

import duckdb

from bifrost_pipeline.destinations.duckdb import DuckDBDestination
from bifrost_pipeline.destinations.local import LocalDestination
from bifrost_pipeline_tests.destinations import object_store_cases as cases
from bifrost_pipeline_tests.destinations import warehouse_data as wd
from bifrost_pipeline_tests.destinations.context import context


def test_local_reads_the_manifest_and_file_sizes_back(tmp_path):
    config = LocalDestination.Config(path=str(tmp_path / "out"), prefix=cases.PREFIX)
    cases.check_count_rows(LocalDestination(config, context("e", tmp_path)), tmp_path)


def test_duckdb_counts_the_partition_in_its_table(tmp_path):
    dest = DuckDBDestination(DuckDBDestination.Config(table="counted"), context("daily", tmp_path))

    def delete_one(table: str, request_id: str) -> None:
        with duckdb.connect(str(dest.path)) as con:
            con.execute(f'DELETE FROM "{table}" WHERE request_id = ?', [request_id])

    wd.check_count_rows(dest, tmp_path, delete_one)
