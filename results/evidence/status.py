"""Prints the "Where the runs stand" table of README.md from the run folders here (metrics.jsonl, final.json):
    python results/evidence/status.py"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def short(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


print("| run | steps reached | status | evaluation return (mean of the episodes) by step | "
      "critic MSE under two independent shifts (`invariance/q_mse_two_shifts`) |")
print("|---|---|---|---|---|")
for run in sorted(p for p in HERE.iterdir() if (p / "args.json").exists()):
    args = json.loads((run / "args.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    reached = max((r["global_step"] for r in rows), default=0)
    final = json.loads((run / "final.json").read_text()) if (run / "final.json").exists() else None
    status = "finished" if final else "incomplete"
    evals = [r for r in rows if "eval/episodic_return" in r]
    curve = ", ".join(f"{r['global_step'] // 1000}k: {short(r['eval/episodic_return'])}" for r in evals)
    inv = ", ".join(f"{r['global_step'] // 1000}k: {short(r['invariance/q_mse_two_shifts'])}" for r in evals
                    if "invariance/q_mse_two_shifts" in r)
    if final and not evals:  # Atari: one final evaluation
        curve = f"final: {final['mean_return']:.1f} +- {final['std_return']:.1f} over {final['eval_episodes']} games"
        if final.get("hns") is not None:
            curve += f" (HNS {final['hns']:.3f})"
    print(f"| `{run.name}` | {reached:,} of {args['total_timesteps']:,} | {status} | {curve} | {inv} |")
