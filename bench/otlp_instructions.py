"""Instructions per OTLP span, compiled and from source: a figure that does not move with the machine.

    python bench/otlp_instructions.py [--bodies 10]

Wall and CPU seconds on a shared machine vary by a third from one run to the next (docs/benchmarks.md), too
much to see a change of a few percent. valgrind's callgrind counts the instructions the process executes,
the same for the same code and input whatever else runs. Each side converts ``--bodies`` protobuf bodies of
1,000 openai-v2 chat spans (``otlp.decode`` + ``intake.convert_spans``: decode, map, check, serialize,
group by hour; nothing landed) under callgrind, once with the bodies and once without, in processes of
their own: the difference over the spans is the instructions per span. The compiled modules as installed
(``proxy/native.py``), then from source (BIFROST_NATIVE=0), the baseline. Needs valgrind (Debian's
``valgrind``); about a minute a side.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(bodies: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import intake_bench

    from bifrost_pipeline.proxy import intake, otlp
    from bifrost_pipeline.proxy.pricing import Pricing

    intake_bench.keep_freed_memory()
    pricing = Pricing()
    made = intake_bench.otlp_bodies(1000, bodies + 1)

    def convert(body: bytes) -> None:
        spans, _ = otlp.decode(body, "application/x-protobuf", "")
        intake.convert_spans(spans, customer_id="bench", content=True, pricing=pricing)

    convert(made[0])  # the check compiled, the prices read: in both runs
    for body in made[1:] if os.environ.get("BENCH_CONVERT") == "1" else []:
        convert(body)


def instructions(native: bool, bodies: int, convert: bool) -> int:
    env = {**os.environ, "BIFROST_NATIVE": "1" if native else "0", "BENCH_CONVERT": "1" if convert else "0"}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--child", "--bodies", str(bodies)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bodies", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.bodies)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    spans = 1000 * args.bodies
    per_span = {}
    for native in (True, False):
        per_span[native] = (instructions(native, args.bodies, True) - instructions(native, args.bodies, False)) / spans
        print(f"{'compiled' if native else 'from source':>12}: {per_span[native]:>9,.0f} instructions a span")
    print(f"from source / compiled: {per_span[False] / per_span[True]:.2f}x ({spans:,} spans a side)")


if __name__ == "__main__":
    main()
