"""``python -m bifrost_pipeline.proxy --config ...`` (the same as ``bifrost-pipeline proxy --config ...``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["proxy", *sys.argv[1:]]))
