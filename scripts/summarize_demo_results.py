"""Summarise several `tcsa-uda demo` output folders (seeds x directions) as a markdown table.

Usage: python scripts/summarize_demo_results.py DEMO_DIR [DEMO_DIR ...]
Each DEMO_DIR holds the results.json written by `tcsa-uda demo`; the wall time is read from
DEMO_DIR/wall_seconds.txt when present (written by the caller, e.g. with `/usr/bin/time`).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def main(folders: list[str]) -> None:
    rows = []
    for folder in folders:
        res = json.loads((Path(folder) / "results.json").read_text())
        src, tgt = res["source"], res["target"]
        m = res["methods"]
        wall_file = Path(folder) / "wall_seconds.txt"
        rows.append(
            {
                "dir": f"{src}->{tgt}",
                "seed": res["seed"],
                "so_src": m["source_only"][src]["mean"],
                "so_tgt": m["source_only"][tgt]["mean"],
                "tcsa_tgt": m["tcsa"][tgt]["mean"],
                "tcsa_cls": m["tcsa"][tgt]["per_class"],
                "so_cls": m["source_only"][tgt]["per_class"],
                "wall": float(wall_file.read_text()) if wall_file.is_file() else None,
            }
        )
    print(
        "| direction | seed | source-only on source test | source-only on target test | TCSA-UDA on target test | "
        "gain (points) | demo wall time |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["dir"], r["seed"])):
        gain = 100 * (r["tcsa_tgt"] - r["so_tgt"])
        wall = "n/a" if r["wall"] is None else f"{r['wall'] / 60:.1f} min"
        print(
            f"| {r['dir']} | {r['seed']} | {pct(r['so_src'])} | {pct(r['so_tgt'])} | {pct(r['tcsa_tgt'])} | "
            f"{gain:+.1f} | {wall} |"
        )
    print()
    for d in sorted({r["dir"] for r in rows}):
        sel = [r for r in rows if r["dir"] == d]
        gains = [100 * (r["tcsa_tgt"] - r["so_tgt"]) for r in sel]
        sd = statistics.pstdev(gains) if len(gains) > 1 else 0.0
        print(
            f"- {d}: mean gain {statistics.mean(gains):+.1f} (std {sd:.1f}) Dice points over {len(sel)} seed(s); "
            f"source-only target {100 * statistics.mean(r['so_tgt'] for r in sel):.1f}, TCSA-UDA target "
            f"{100 * statistics.mean(r['tcsa_tgt'] for r in sel):.1f}"
        )
    print()
    classes = list(rows[0]["tcsa_cls"])
    print("| direction | method | " + " | ".join(classes) + " |")
    print("|---|---|" + "---|" * len(classes))
    for d in sorted({r["dir"] for r in rows}):
        sel = [r for r in rows if r["dir"] == d]
        for key, name in (("so_cls", "source-only"), ("tcsa_cls", "TCSA-UDA")):
            vals = []
            for c in classes:
                xs = [r[key][c] for r in sel if r[key][c] is not None]
                vals.append(pct(statistics.mean(xs)) if xs else "n/a")
            print(f"| {d} | {name} (mean of seeds) | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
