"""The mini evaluation table as text for the terminal and as Markdown for README."""

from __future__ import annotations

ORDER = ("pgd", "transfer", "untargeted", "adaptive", "easiest", "weakest")


def _label(r: dict) -> str:
    parts = [r["attack"]]
    if r.get("targets") not in (None, "one", "none", "easiest", "weakest"):
        parts.append(f"[{r['targets']}]")
    if r.get("aimed_at"):
        parts.append(f"@{r['aimed_at']}")
    return "".join(parts)


def format_table(rows: list[dict]) -> str:
    def num(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    lines = ["method               attack                 eps  auroc   acc  tpr@1%  asr    undet   n"]
    for r in rows:
        lines.append(f"{r['method']:20} {_label(r):22} {r['eps']:3g} {num(r['auroc'])} {num(r['accuracy'])} "
                     f"{num(r['tpr_at_1pct_fpr'])} {num(r['attack_success_rate'])} "
                     f"{num(r.get('undetected_success_rate'))} {r['n']:5d}")
    return "\n".join(lines)


def markdown_table(result: dict) -> str:
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["| method | attack | eps | AUROC | acc | TPR@1%FPR | ASR | undetected @5% | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: (ORDER.index(r["attack"]), r["eps"], _label(r), r["method"])):
        lines.append(f"| {r['method']} | {_label(r)} | {r['eps']:g} | {num(r['auroc'])} | {num(r['accuracy'])} "
                     f"| {num(r['tpr_at_1pct_fpr'])} | {num(r['attack_success_rate'])} "
                     f"| {num(r.get('undetected_success_rate'))} | {r['n']} |")
    if result.get("steps"):
        lines += ["", "| Euler steps | AUROC (PGD eps 8) | generator accuracy | generation time vs default |",
                  "|---|---|---|---|"]
        lines += [f"| {r['steps']} | {num(r['auroc'])} | {num(r['generator_accuracy'])} | {r['time_ratio']:.2f}x |"
                  for r in result["steps"]]
    return "\n".join(lines)


def worst_case(result: dict) -> list[dict]:
    """Per detector and eps, the attack in this run that let most attacks through undetected
    (ties: the lower AUROC): the row a defence must be judged by."""
    worst: dict[tuple[str, float], dict] = {}
    for r in result["rows"]:
        if r.get("undetected_success_rate") is None:
            continue
        key = (r["method"], r["eps"])
        if key not in worst or _rank(r) > _rank(worst[key]):
            worst[key] = r
    return [worst[k] for k in sorted(worst)]


def _rank(r: dict) -> tuple[float, float]:
    return r["undetected_success_rate"], -(r["auroc"] if r["auroc"] is not None else 1.0)


def markdown_worst_case(result: dict) -> str:
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["| detector | eps | strongest attack | AUROC | TPR@1%FPR | undetected @5% | clean FPR (test) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['eps']:g} | {_label(r)} | {num(r['auroc'])} | {num(r['tpr_at_1pct_fpr'])} "
              f"| {num(r['undetected_success_rate'])} | {num(r['clean_fpr_test'])} |" for r in worst_case(result)]
    return "\n".join(lines)
