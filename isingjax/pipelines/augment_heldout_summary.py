"""The held-out rule's analyses across the cases of an `augment` run, for its summary.md:
the regret of every rule per M, how many ▲ chance alone would give, and the rule
re-applied to the recorded held-out scores at other margins and confirmations."""

from __future__ import annotations

import numpy as np
from scipy import stats

from isingjax.generators import selection
from isingjax.pipelines.augment_records import base_values, label, rule_values
from isingjax.pipelines.common import paired_delta, worse_by

# selection.margin_se values at which `margin_table` re-applies the held-out rule without
# the folds' confirmation, and selection.confirm_se values at which it does, at the run's
# margin
MARGINS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 10.0)
CONFIRMS = (1.0, 1.5, 2.0, 3.0)


def chance_of_worse(num_seeds: int, num_se: float) -> float:
    """P(mean > num_se s.e.) of num_seeds normal paired differences of mean 0: how often a
    case where the rule changes nothing on average is marked worse by chance (Student's t
    with num_seeds - 1 degrees of freedom)."""
    return float(stats.t.sf(num_se, num_seeds - 1))


def _regret_rules(arrays) -> list[tuple[str, int]]:
    """The rules whose regret `regret_by_m_table` reports: held-out, then each EV K."""
    cols = zip(arrays["rule_arms"].tolist(), arrays["rule_ratios"].tolist(), strict=True)
    return [("heldout", 0)] + [(a, r) for a, r in cols if a == "energy_variance"]


def _heldout_cases(arrays, j: int) -> list[tuple[list[float], bool, bool, bool, str]]:
    """The (beta, method, generator) cases of M index j with every rule computed, each as
    (regret of every `_regret_rules` rule, whether the held-out rule took K > 0 at some
    seed, whether it is worse than observed only by more than one s.e. (▲), and by more
    than two, and `_one_seed_worse`'s description or "")."""
    cases, rules = [], _regret_rules(arrays)
    for i in range(len(arrays["betas"])):
        for k in range(len(arrays["methods"])):
            at = (i, j, k)
            for g in arrays["generators"].tolist():
                best = rule_values(arrays, at, g, "hindsight", 0)
                r = [paired_delta(rule_values(arrays, at, g, a, q), best)[0] for a, q in rules]
                if np.isnan(r).any():
                    continue
                chosen = rule_values(arrays, at, g, "heldout", 0, field="chosen_ratio")
                held = rule_values(arrays, at, g, "heldout", 0)
                observed = base_values(arrays, at, "observed", 0)
                _, a, w1, w2 = _heldout_stats(held, observed, best, chosen)
                where = (arrays["betas"][i], arrays["sample_sizes"][j], arrays["methods"][k], g)
                cases.append((r, a, w1, w2, _one_seed_worse(held, observed, *where)))
    return cases


def _one_seed_worse(held, observed, beta, m, method, generator) -> str:
    """Where the held-out rule's MSE differs from observed only's at exactly one seed and
    is larger there, the case and that difference (e.g. 'β = 1, M = 400, plm, ddpm:
    +7.73e-03'); else "". Such a difference equals its s.e. (t = 1) whatever its size,
    so it is never ▲."""
    diff = np.asarray(held, np.float64) - np.asarray(observed, np.float64)
    changed = diff[diff != 0]
    if changed.size != 1 or changed[0] <= 0:
        return ""
    return f"β = {beta:g}, M = {m}, {method}, {generator}: {changed[0]:+.2e}"


def regret_by_m_table(arrays) -> str:
    """Markdown: per M, over the (beta, method, generator) cases with every rule computed,
    every rule's regret (mean over seeds, then over the cases), the cases where the
    held-out rule's regret is below that of the energy-variance rule at every K, those
    where it took K > 0 at some seed, and those where it is worse than observed only by
    more than one s.e. (the ▲ of `paired_table`) and by more than two."""
    heads = [label(a, r) for a, r in _regret_rules(arrays)]
    lines = [
        "| M | cases | "
        + " | ".join(heads)
        + " | held-out below every EV K | held-out K > 0 at some seed | held-out ▲ "
        "| held-out worse by > 2 s.e. |",
        "|---|---|" + "---|" * (len(heads) + 4),
    ]
    for j, m in enumerate(arrays["sample_sizes"]):
        cases = _heldout_cases(arrays, j)
        if cases:
            regrets = np.asarray([c[0] for c in cases])
            below = int(np.sum(regrets[:, 0] < regrets[:, 1:].min(axis=1)))
            counts = [below] + [sum(c[i] for c in cases) for i in (1, 2, 3)]
            means = regrets.mean(axis=0)
            cells = [f"{len(cases)}"] + [f"{v:.2e}" for v in means] + [f"{c}" for c in counts]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chance_note(arrays) -> str:
    """One paragraph: over every M, how many ▲ (and > 2 s.e.) the held-out rule's cases
    with K > 0 at some seed would show by chance if no case's MSE were raised on average.
    Each such case is marked with probability at most `chance_of_worse` (less where the
    MSE falls), so the count is at most Binomial(cases, p) for independent cases; its mean
    bounds the expected count whatever the dependence. Then the cases worse at exactly one
    seed (`_one_seed_worse`). "" with fewer than two seeds."""
    seeds = arrays["mse_all"].shape[-1]
    cases = [c for j in range(len(arrays["sample_sizes"])) for c in _heldout_cases(arrays, j)]
    if seeds < 2 or not cases:
        return ""
    n = sum(c[1] for c in cases)
    (p1, x1), (p2, x2) = ((chance_of_worse(seeds, t), sum(c[t + 1] for c in cases)) for t in (1, 2))

    def tail(x, p):  # P(Binomial(n, p) >= x), for x > 0
        at_least = stats.binom.sf(x - 1, n, p)
        return f", {x} or more with probability at most {at_least:.2f}" if x else ""

    return (
        f"Over every M the held-out rule took K > 0 at some seed in {n} of {len(cases)} "
        "cases. Had it raised no case's MSE on average, each of them would be marked ▲ with "
        f"probability at most {p1:.1%} and worse by > 2 s.e. with at most {p2:.1%}: at most "
        f"{n * p1:.1f} ▲ and {n * p2:.1f} worse by > 2 s.e. expected by chance (observed: "
        f"{x1} and {x2}). With independent cases such a rule would show no ▲ at all with "
        f"probability {(1 - p1) ** n:.1%}{tail(x1, p1)} (> 2 s.e.: none with probability "
        f"{(1 - p2) ** n:.1%}{tail(x2, p2)}); the cases share seeds and truths, so these "
        "probabilities are a guide, while the expected counts hold whatever the dependence."
        + _one_seed_sentence([c[4] for c in cases if c[4]])
        + "\n"
    )


def _one_seed_sentence(worse: list[str]) -> str:
    """The cases the held-out rule made worse at exactly one seed (never ▲: t = 1)."""
    if not worse:
        return " No case is worse than observed only at exactly one seed."
    return (
        f" Worse than observed only at exactly one seed, where the paired difference equals "
        f"its s.e. (t = 1) whatever its size, so never ▲: {len(worse)} case"
        f"{'s' if len(worse) > 1 else ''} ({'; '.join(worse)}, the difference at that seed)."
    )


def _heldout_stats(held, observed, best, chosen) -> tuple[float, bool, bool, bool]:
    """Of a held-out rule's MSE per seed: its regret (mean over seeds of held - best), whether
    it took K > 0 (chosen, per seed) at some seed, and whether it is worse than observed
    only by more than one s.e. of the paired difference (the ▲ of
    `augment_summary.paired_table`) and by more than two."""
    augments = bool(np.nan_to_num(np.asarray(chosen, np.float64)).max() > 0)
    worse = (worse_by(held, observed, x) for x in (1.0, 2.0))
    return float(paired_delta(held, best)[0]), augments, *worse


def margin_table(
    arrays, checks, margin_se: float, confirm_se: float, margins=MARGINS, confirms=CONFIRMS
) -> str:
    """Markdown: the held-out rule re-applied to the pooled and per-fold scores and the
    standard errors the run recorded (metrics.jsonl, kind 'heldout'), its picks read off
    the grid and observed only (no refits): without confirmation (selection.confirm_se 0)
    at every selection.margin_se of `margins` and the run's, and at the run's margin with every
    confirm_se of `confirms`; the run's own (margin_se, confirm_se) is marked. Per M and
    setting, over the (beta, method, generator) cases whose scores are complete: the
    regret (mean over seeds, then over the cases; the hindsight arm as in
    `regret_by_m_table`), whether it is below the energy-variance rule's mean regret over
    the same cases at every K, and the cases where it took K > 0 at some seed and where it
    is worse than observed only by more than one s.e. (▲) and two. At the run's setting
    the picks are the run's, so its rows repeat `regret_by_m_table`'s held-out columns.
    The table shows what each setting costs and buys on these seeds; a setting picked
    from it would be tuned on the data the run's numbers are scored on."""
    scores = {}
    for r in checks:
        if r.get("kind") == "heldout" and "fold_scores" in r:
            key = (r["beta"], r["num_samples"], r["method"], r["generator"], r["seed"], r["step"])
            fields = ("scores", "se", "fold_scores")
            scores[key] = tuple(np.asarray(r[x], np.float64) for x in fields)
    ratios = [int(x) for x in arrays["grid_ratios"]]
    sizes, gens = [0, *ratios], arrays["generators"].tolist()
    run = (float(margin_se), float(confirm_se))
    settings = sorted(
        {(float(x), 0.0) for x in (*margins, margin_se)}
        | {(run[0], float(c)) for c in confirms}
        | {run},
        key=lambda xc: (xc[1] > 0, xc),
    )
    ev_rules = _regret_rules(arrays)[1:]
    lines = [
        "| M | margin (s.e.) | confirm (s.e.) | cases | held-out rule's regret "
        "| below every EV K | K > 0 at some seed | held-out ▲ | worse by > 2 s.e. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for j, m in enumerate(arrays["sample_sizes"]):
        stats_of, ev_regrets = {x: [] for x in settings}, []
        for i, beta in enumerate(arrays["betas"]):
            for k, method in enumerate(arrays["methods"]):
                at = (i, j, k)
                observed = base_values(arrays, at, "observed", 0)
                for h, g in enumerate(gens):
                    best = rule_values(arrays, at, g, "hindsight", 0)
                    steps = [int(x) for x in arrays["grid_steps"][h] if x]
                    keys = [
                        [(float(beta), int(m), str(method), g, s, t) for t in steps]
                        for s in arrays["seeds"].tolist()
                    ]
                    if np.isnan(best).any() or not all(x in scores for x in sum(keys, [])):
                        continue
                    grid = arrays["grid_mse_all"][(*at, h)]  # [checkpoint, ratio, seed]
                    ev_regrets.append(
                        [
                            paired_delta(rule_values(arrays, at, g, a, q), best)[0]
                            for a, q in ev_rules
                        ]
                    )
                    for x, c_se in settings:
                        held, chosen = [], []
                        for s, seed_keys in enumerate(keys):
                            mean, se, folds = ([scores[y][v] for y in seed_keys] for v in range(3))
                            c, ratio = selection.choose(mean, sizes, se, x, folds, c_se)
                            held.append(grid[c, ratios.index(ratio), s] if ratio else observed[s])
                            chosen.append(ratio)
                        stats_of[x, c_se].append(_heldout_stats(held, observed, best, chosen))
        for x in settings:
            if stats_of[x]:
                regret = np.mean([v[0] for v in stats_of[x]])
                below = (
                    ("yes" if regret < np.min(np.mean(ev_regrets, axis=0)) else "no")
                    if ev_rules
                    else "–"
                )
                counts = np.sum([v[1:] for v in stats_of[x]], axis=0)
                mark = " (this run)" if x == run else ""
                confirm = f"{x[1]:g}" if x[1] else "off"
                lines.append(
                    f"| {m} | {x[0]:g} | {confirm}{mark} | {len(stats_of[x])} | {regret:.2e} | "
                    f"{below} | " + " | ".join(str(int(c)) for c in counts) + " |"
                )
    return "\n".join(lines) + "\n"
