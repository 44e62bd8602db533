import os

# gcsfs waits 60 s per bucket on a gRPC layout lookup unless this is set before it is imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

pytest_plugins = [
    "bifrost_pipeline_tests.emulators.warehouses",
    "bifrost_pipeline_tests.emulators.object_stores",
    "bifrost_pipeline_tests.emulators.log_services",
]
