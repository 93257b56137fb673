"""Loss settings side by side: the same train config under several loss variants and seeds,
per-exit validation UAR at the last epoch (no checkpoint selection on the validation fold)
and at the best epoch by the config's checkpoint metric.

    .venv/bin/python bench/loss_comparison.py --dataset runs/demo/data --seeds 0,1 \\
        --variant paper=loss.preset=paper \\
        --variant tuned=loss.preset=paper,loss.exit_ce_weight=1.365,loss.kd_weight=0.540,...

Each variant is ``name=key=value,key=value`` (overrides of ``--config``); every run trains
with Ray Train on a local cluster, one run at a time, into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emodistill.evaluate.metrics import exits_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/demo_cpu.yaml")
    parser.add_argument("--dataset", default="runs/demo/data")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variant", action="append", required=True, help="name=key=value,key=value")
    parser.add_argument("--out", default="runs/bench/loss_comparison")
    args = parser.parse_args()

    from emodistill.cluster import init_ray
    from emodistill.evaluate.tables import markdown_table
    from emodistill.train.config import TrainConfig
    from emodistill.train.driver import fit

    init_ray(quiet=True)
    out = Path(args.out).absolute()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[dict]] = {}
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        for seed in seeds:
            cfg = TrainConfig.from_yaml(
                args.config,
                [o for o in overrides.split(",") if o]
                + [
                    f"data.dataset={Path(args.dataset).absolute()}",
                    f"seed={seed}",
                    f"run.name={name}-seed{seed}",
                    f"run.storage_path={out / 'ray'}",
                    "run.export_dir=null",
                    "run.if_exists=overwrite",
                ],
            )
            result = fit(cfg, progress=False)
            runs.setdefault(name, []).append({"seed": seed, "last": result.history[-1], "best": result.best_metrics})
            print(f"{name} seed {seed}: last epoch mean exit UAR {result.history[-1]['val/mean_exit_uar']:.3f}", flush=True)

    exits = exits_in(runs[next(iter(runs))][0]["last"])
    for when in ("last", "best"):
        rows = []
        for name, results in runs.items():
            cells = []
            for key in [f"val/{n}/uar" for n in exits] + ["val/mean_exit_uar"]:
                values = np.array([r[when][key] for r in results])
                cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
            rows.append([name, *cells])
        print(f"\nvalidation UAR, {when} epoch, mean ± std over seeds {seeds}:")
        print(markdown_table(["variant", *exits, "mean over exits"], rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(runs, indent=1, default=float))


if __name__ == "__main__":
    main()
