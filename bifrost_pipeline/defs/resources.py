"""The pipeline's configuration as a Dagster resource: assets never read the environment themselves."""


import dagster as dg

from bifrost_pipeline.config import AppConfig, load_config

# Assets take the resource as their `pipeline` parameter: Dagster matches that name to this key.
PIPELINE_RESOURCE_KEY = "pipeline"

_loaded: dict[str, AppConfig] = {}


class PipelineResource(dg.ConfigurableResource):
    """Path of the bifrost_pipeline config file (the same file the code location was built from).

    (Not to be confused with `config.PipelineConfig`, the `pipeline:` section of that file.)
    """

    config_path: str

    def app(self) -> AppConfig:
        if self.config_path not in _loaded:
            _loaded[self.config_path] = load_config(self.config_path)
        return _loaded[self.config_path]


def build_resources(config_path: str) -> dg.Definitions:
    return dg.Definitions(resources={PIPELINE_RESOURCE_KEY: PipelineResource(config_path=config_path)})
