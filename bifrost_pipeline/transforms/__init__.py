"""Pure transforms on Polars LazyFrames (and DuckDB for exact, bounded-memory aggregates). No Dagster here."""
