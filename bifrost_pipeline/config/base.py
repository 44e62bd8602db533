"""The base of every section model of the config file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors (a misspelt key must not be silently ignored); loaded objects are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
