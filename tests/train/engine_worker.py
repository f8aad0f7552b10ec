"""One process of a distributed test run: `torchrun ... tests/train/engine_worker.py PLAN.json`.

PLAN.json: {"runs": [TrainConfig settings, ...], "step_delay": seconds}.  The runs train one after another in the
same processes (one launch per engine: the imports and the process group are paid once).  Each rank writes its pid to
``<output of the first run>.pid<rank>`` so a test can SIGKILL one rank; ``step_delay`` slows every micro-batch down
(numerics untouched) so that a kill lands mid-run.
"""

from __future__ import annotations

import json
import os
import sys
import time

from minigemini.cli.train import _leave_process_group
from minigemini.train import TrainConfig, train
from minigemini.train.trainer import MiniGeminiTrainer


def main(plan_path: str) -> int:
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    runs = plan["runs"]
    with open(f"{runs[0]['output']}.pid{os.environ.get('RANK', '0')}", "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))
    delay = plan.get("step_delay", 0)
    if delay:
        step = MiniGeminiTrainer.training_step

        def slow_step(self, *args, **kwargs):
            time.sleep(delay)
            return step(self, *args, **kwargs)

        MiniGeminiTrainer.training_step = slow_step
    finished = False
    try:
        for settings in runs:
            result = train(TrainConfig.from_sources(None, {"progress": False, **settings}))
            del result
        finished = True
    finally:
        _leave_process_group(finished)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
