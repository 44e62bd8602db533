"""`anonymize`: keyed hash (HMAC-SHA256), redact or drop fields."""

from __future__ import annotations

import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)

from bifrost_pipeline.config import Anonymize

REDACTED = "[REDACTED]"


def anonymize(lf: pl.LazyFrame, step: Anonymize) -> pl.LazyFrame:
    """Apply one anonymize step; fields the frame does not have (dropped or aggregated away) are skipped."""
    schema = lf.collect_schema()
    present = [f for f in step.fields if f in schema]
    if not present:
        return lf
    if step.method == "drop":
        return lf.drop(present)
    if step.method == "redact":
        return lf.with_columns(
            pl.when(pl.col(f).is_null()).then(pl.lit(None)).otherwise(pl.lit(REDACTED)).alias(f)
            if schema[f] == pl.String
            else pl.lit(None, dtype=schema[f]).alias(f)
            for f in present
        )
    assert step.key is not None, "hash needs its key (checked at config load)"
    key = step.key.get_secret_value()
    # A keyed hash: equal inputs stay joinable, but without the key a hash cannot be reversed by hashing
    # guessed ids.
    return lf.with_columns(pl.col(f).cast(pl.String).chash.hmac_sha256(key=key).alias(f) for f in present)
