"""The pipeline's configuration as a Dagster resource: assets never read the environment themselves."""


import dagster as dg

from bifrost_pipeline.config import AppConfig, load_config

_loaded: dict[str, AppConfig] = {}


class PipelineConfig(dg.ConfigurableResource):
    """Path of the bifrost_pipeline config file (the same file the code location was built from)."""

    config_path: str

    def app(self) -> AppConfig:
        if self.config_path not in _loaded:
            _loaded[self.config_path] = load_config(self.config_path)
        return _loaded[self.config_path]
