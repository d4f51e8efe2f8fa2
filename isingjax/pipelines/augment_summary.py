"""summary.md of the `augment` pipeline: its markdown tables, from the arrays of
isingjax/pipelines/augment_records.py."""

from __future__ import annotations

import numpy as np
from scipy import stats

from isingjax.generators import selection
from isingjax.pipelines import common

# selection.margin_se values at which `margin_table` re-applies the held-out rule
MARGINS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 10.0)

LABELS = {
    "l2": "tuned L2 (plm)",
    "generated_l2": "+ tuned L2 (plm)",
    "heldout": "held-out rule",
    "hindsight": "hindsight best",
    "energy_variance": "energy variance K={r}M",
}


def label(arm, ratio) -> str:
    if arm in LABELS:
        return LABELS[arm].format(r=ratio)
    return f"{arm} K={ratio}M" if ratio else arm


def _flags(converged, nonfinite) -> str:
    """'†' when some seed's fit did not converge, '‡' when some seed's generated spins
    came from non-finite values."""
    flag = "†" if np.any(converged == 0) else ""
    return flag + ("‡" if np.any(np.nan_to_num(nonfinite) > 0) else "")


def _cell(values, converged=None, nonfinite=None) -> str:
    mu, e = common.mean_se(values)
    if np.isnan(mu):
        return "–"
    flags = "" if converged is None else _flags(converged, nonfinite)
    return f"{mu:.2e} ± {e:.0e}{flags}"


def _rows(arrays):
    for i, beta in enumerate(arrays["betas"]):
        for j, m in enumerate(arrays["sample_sizes"]):
            for k, method in enumerate(arrays["methods"]):
                yield (i, j, k), f"| {beta:g} | {m} | {method} | "


def _table(heads, arrays, row_fn) -> str:
    lines = [
        "| β | M | method | " + " | ".join(heads) + " |",
        "|---|---|---|" + "---|" * len(heads),
    ]
    for at, start in _rows(arrays):
        row = row_fn(at)
        if set(row) != {"–"}:  # rows a partial run has not computed are left out
            lines.append(start + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _base(arrays, at, arm, ratio, field="mse_all"):
    cols = list(zip(arrays["arms"].tolist(), arrays["ratios"].tolist(), strict=True))
    return arrays[field][(*at, cols.index((arm, ratio)))]


def _rule(arrays, at, gen, arm, ratio, field="mse_all"):
    cols = list(zip(arrays["rule_arms"].tolist(), arrays["rule_ratios"].tolist(), strict=True))
    if (arm, ratio) not in cols:
        return np.full(len(arrays["seeds"]), np.nan)
    h = arrays["generators"].tolist().index(gen)
    return arrays["gen_" + field][(*at, h, cols.index((arm, ratio)))]


def summary_table(arrays) -> str:
    """Markdown: MSE (all) mean ± s.e. over seeds of every arm without a generator (per
    (beta, M, method) row), with the flags of `_flags`."""
    cols = list(zip(arrays["arms"].tolist(), arrays["ratios"].tolist(), strict=True))

    def row(at):
        return [
            _cell(
                arrays["mse_all"][(*at, c)],
                arrays["converged"][(*at, c)],
                arrays["num_nonfinite"][(*at, c)],
            )
            for c in range(len(cols))
        ]

    return _table([label(a, r) for a, r in cols], arrays, row)


def rules_table(arrays, gen) -> str:
    """Markdown: MSE (all) of generator `gen` under every rule."""
    cols = list(zip(arrays["rule_arms"].tolist(), arrays["rule_ratios"].tolist(), strict=True))

    def row(at):
        out = []
        for arm, ratio in cols:
            conv = _rule(arrays, at, gen, arm, ratio, "converged")
            nonfinite = _rule(arrays, at, gen, arm, ratio, "num_nonfinite")
            out.append(_cell(_rule(arrays, at, gen, arm, ratio), conv, nonfinite))
        return out

    return _table([label(a, r) for a, r in cols], arrays, row)


def paired_delta(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e. over seeds (last axis) of the per-seed difference a - b."""
    return common.mean_se(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def _worse(a, b) -> bool:
    """a is worse (larger) than b by more than one s.e. of the paired difference (▲)."""
    mu, e = paired_delta(a, b)
    return bool(mu > e)


def chance_of_worse(num_seeds: int, num_se: float) -> float:
    """P(mean > num_se s.e.) of num_seeds normal paired differences of mean 0: how often a
    case where the rule changes nothing on average is marked worse by chance (Student's t
    with num_seeds - 1 degrees of freedom)."""
    return float(stats.t.sf(num_se, num_seeds - 1))


def _delta(a, b, worse_mark=False) -> str:
    mu, e = paired_delta(a, b)
    if np.isnan(mu):
        return "–"
    mark = " ▲" if worse_mark and _worse(a, b) else ""
    return f"{mu:+.2e} ± {e:.0e}{mark}"


def paired_table(arrays) -> str:
    """Markdown: per generator, the held-out rule's MSE minus observed-only (▲: worse by
    more than one s.e.) and the regret (MSE minus hindsight's) of every rule."""
    gens = arrays["generators"].tolist()
    rules = [
        (a, r)
        for a, r in zip(arrays["rule_arms"], arrays["rule_ratios"], strict=True)
        if a in ("heldout", "energy_variance")
    ]
    heads = [f"{g}: held-out − observed" for g in gens if "heldout" in arrays["rule_arms"]]
    heads += [f"{g}: regret of {label(a, r)}" for g in gens for a, r in rules]

    def row(at):
        observed = _base(arrays, at, "observed", 0)
        out = []
        if "heldout" in arrays["rule_arms"]:
            out += [_delta(_rule(arrays, at, g, "heldout", 0), observed, True) for g in gens]
        for g in gens:
            best = _rule(arrays, at, g, "hindsight", 0)
            out += [_delta(_rule(arrays, at, g, a, r), best) for a, r in rules]
        return out

    return _table(heads, arrays, row)


def _regret_rules(arrays) -> list[tuple[str, int]]:
    """The rules whose regret `regret_by_m_table` reports: held-out, then each EV K."""
    cols = zip(arrays["rule_arms"].tolist(), arrays["rule_ratios"].tolist(), strict=True)
    return [("heldout", 0)] + [(a, r) for a, r in cols if a == "energy_variance"]


def _heldout_cases(arrays, j: int) -> list[tuple[list[float], bool, bool, bool]]:
    """The (beta, method, generator) cases of M index j with every rule computed, each as
    (regret of every `_regret_rules` rule, whether the held-out rule took K > 0 at some
    seed, whether it is worse than observed only by more than one s.e. (▲), and by more
    than two)."""
    cases, rules = [], _regret_rules(arrays)
    for i in range(len(arrays["betas"])):
        for k in range(len(arrays["methods"])):
            at = (i, j, k)
            for g in arrays["generators"].tolist():
                best = _rule(arrays, at, g, "hindsight", 0)
                r = [paired_delta(_rule(arrays, at, g, a, q), best)[0] for a, q in rules]
                if np.isnan(r).any():
                    continue
                chosen = _rule(arrays, at, g, "heldout", 0, field="chosen_ratio")
                held = _rule(arrays, at, g, "heldout", 0)
                _, a, w1, w2 = _heldout_stats(held, _base(arrays, at, "observed", 0), best, chosen)
                cases.append((r, a, w1, w2))
    return cases


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
    bounds the expected count whatever the dependence. "" with fewer than two seeds."""
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
        "probabilities are a guide, while the expected counts hold whatever the dependence.\n"
    )


def _heldout_stats(held, observed, best, chosen) -> tuple[float, bool, bool, bool]:
    """Of a held-out rule's MSE per seed: its regret (mean over seeds of held - best), whether
    it took K > 0 (chosen, per seed) at some seed, and whether it is worse than observed
    only by more than one s.e. of the paired difference (the ▲ of `_worse`) and by more
    than two."""
    mu, e = paired_delta(held, observed)
    augments = bool(np.nan_to_num(np.asarray(chosen, np.float64)).max() > 0)
    return float(paired_delta(held, best)[0]), augments, bool(mu > e), bool(mu > 2 * e)


def margin_table(arrays, checks, margin_se: float, margins=MARGINS) -> str:
    """Markdown: the held-out rule re-applied with every selection.margin_se of `margins`
    (and the run's, `margin_se`, marked) to the pooled scores and standard errors the run
    recorded (metrics.jsonl, kind 'heldout'), its picks read off the grid and observed
    only (no refits): per M and margin, over the (beta, method, generator) cases whose
    scores are complete, the regret (mean over seeds, then over the cases; the hindsight
    arm as in `regret_by_m_table`), whether it is below the energy-variance rule's mean
    regret over the same cases at every K, and the cases where it took K > 0 at some
    seed and where it is worse than observed only by more than one s.e. (▲) and two. At the run's
    margin the picks are the run's, so its rows repeat `regret_by_m_table`'s held-out
    columns. The table shows what a margin costs and buys on these seeds; a margin picked
    from it would be tuned on the data the run's numbers are scored on."""
    scores = {}
    for r in checks:
        if r.get("kind") == "heldout":
            key = (r["beta"], r["num_samples"], r["method"], r["generator"], r["seed"], r["step"])
            scores[key] = np.asarray(r["scores"], np.float64), np.asarray(r["se"], np.float64)
    ratios = [int(x) for x in arrays["grid_ratios"]]
    sizes, gens = [0, *ratios], arrays["generators"].tolist()
    margins = sorted(set(margins) | {float(margin_se)})
    ev_rules = _regret_rules(arrays)[1:]
    lines = [
        "| M | margin (s.e.) | cases | held-out rule's regret | below every EV K "
        "| K > 0 at some seed | held-out ▲ | worse by > 2 s.e. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for j, m in enumerate(arrays["sample_sizes"]):
        stats_of, ev_regrets = {x: [] for x in margins}, []
        for i, beta in enumerate(arrays["betas"]):
            for k, method in enumerate(arrays["methods"]):
                at = (i, j, k)
                observed = _base(arrays, at, "observed", 0)
                for h, g in enumerate(gens):
                    best = _rule(arrays, at, g, "hindsight", 0)
                    steps = [int(x) for x in arrays["grid_steps"][h] if x]
                    keys = [
                        [(float(beta), int(m), str(method), g, s, t) for t in steps]
                        for s in arrays["seeds"].tolist()
                    ]
                    if np.isnan(best).any() or not all(x in scores for x in sum(keys, [])):
                        continue
                    grid = arrays["grid_mse_all"][(*at, h)]  # [checkpoint, ratio, seed]
                    ev_regrets.append(
                        [paired_delta(_rule(arrays, at, g, a, q), best)[0] for a, q in ev_rules]
                    )
                    for x in margins:
                        held, chosen = [], []
                        for s, seed_keys in enumerate(keys):
                            c, ratio = selection.choose(
                                [scores[y][0] for y in seed_keys],
                                sizes,
                                [scores[y][1] for y in seed_keys],
                                x,
                            )
                            held.append(grid[c, ratios.index(ratio), s] if ratio else observed[s])
                            chosen.append(ratio)
                        stats_of[x].append(_heldout_stats(held, observed, best, chosen))
        for x in margins:
            if stats_of[x]:
                regret = np.mean([v[0] for v in stats_of[x]])
                below = (
                    ("yes" if regret < np.min(np.mean(ev_regrets, axis=0)) else "no")
                    if ev_rules
                    else "–"
                )
                counts = np.sum([v[1:] for v in stats_of[x]], axis=0)
                mark = " (this run)" if x == margin_se else ""
                lines.append(
                    f"| {m} | {x:g}{mark} | {len(stats_of[x])} | {regret:.2e} | {below} | "
                    + " | ".join(str(int(c)) for c in counts)
                    + " |"
                )
    return "\n".join(lines) + "\n"


def choices_table(arrays) -> str:
    """Markdown: per generator, how many seeds the held-out rule gave each K (0: observed
    only), e.g. '0:5 1M:3'."""
    gens = arrays["generators"].tolist()

    def row(at):
        cells = []
        for g in gens:
            ratios = _rule(arrays, at, g, "heldout", 0, field="chosen_ratio")
            ratios = np.asarray(ratios, np.float64)
            if np.isnan(ratios).all():
                cells.append("–")
                continue
            values, counts = np.unique(ratios[~np.isnan(ratios)].astype(int), return_counts=True)
            cells.append(
                " ".join(
                    f"{v}M:{c}" if v else f"0:{c}" for v, c in zip(values, counts, strict=True)
                )
            )
        return cells

    return _table(gens, arrays, row)


def _augmented_arms(arrays) -> list[tuple[str, int]]:
    """The rule columns a user could run without the truth: every rule but hindsight."""
    rules = zip(arrays["rule_arms"].tolist(), arrays["rule_ratios"].tolist(), strict=True)
    return [(a, r) for a, r in rules if a != "hindsight"]


def versus_l2_table(arrays) -> str:
    """Markdown: at every (beta, M), plm's augmented arms minus the tuned-L2 plm
    (negative: augmentation beats the tuned penalty)."""
    gens = arrays["generators"].tolist()
    rules = _augmented_arms(arrays)
    heads = [f"{g}: {label(a, r)}" for g in gens for a, r in rules]

    def row(at):
        if arrays["methods"][at[2]] != "plm":
            return ["–"] * len(heads)
        l2 = _base(arrays, at, "l2", 0)
        return [_delta(_rule(arrays, at, g, a, r), l2) for g in gens for a, r in rules]

    return _table(heads, arrays, row)


def versus_l2_answers(arrays) -> str:
    """Markdown list: per generator, at the smallest M, whether any of its plm arms (every
    rule but hindsight, and + tuned L2) beats tuned-L2 plm at some beta by more than one
    s.e. of the paired difference (the mirror of ▲), naming those that do, or else the
    closest one."""
    if "plm" not in arrays["methods"].tolist() or "l2" not in arrays["arms"].tolist():
        return ""
    j, k = 0, arrays["methods"].tolist().index("plm")
    m, rules = arrays["sample_sizes"][j], _augmented_arms(arrays)
    lines = []
    for g in arrays["generators"].tolist():
        cases = []  # (mean, s.e., arm label, beta)
        for i, beta in enumerate(arrays["betas"]):
            l2 = _base(arrays, (i, j, k), "l2", 0)
            for a, r in rules:
                mu, e = paired_delta(_rule(arrays, (i, j, k), g, a, r), l2)
                if not np.isnan(mu):
                    cases.append((float(mu), float(e), label(a, r), beta))
        if not cases:
            continue
        wins = [c for c in cases if c[0] < -c[1]]
        shown = wins if wins else [min(cases)]
        cells = ", ".join(f"{lab} at β = {b:g} ({mu:+.2e} ± {e:.0e})" for mu, e, lab, b in shown)
        answer = f"yes: {cells}" if wins else f"no; the closest: {cells}"
        lines.append(f"* {g}: {answer}")
    if not lines:
        return ""
    head = (
        f"At M = {m}, does an augmented plm arm beat tuned-L2 plm by more than one s.e. "
        "(paired per seed)?"
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def generator_table(checks, config) -> str:
    """Markdown: per (beta, M, generator), the generator checks at its last checkpoint
    (mean over seeds): exact KL of its first check_samples spins to the truth, their
    cross-entropy under the truth beside the truth's entropy, copies of observed states
    beside the expectation for exact samples; the data-copying test of the fold
    generators (Z, fraction of seeds x folds with p < 0.05), the held-out log-likelihood
    (exact: MADE; ELBO: masked; none: DDPM) of the held-out folds, and the training
    seconds (all seeds, full + fold generators, over resumes)."""
    heads = [
        "β",
        "M",
        "generator",
        "KL",
        "cross-entropy (H true)",
        "copies (expected)",
        "copying Z (p<0.05)",
        "held-out log-lik",
        "last step",
        "train s",
    ]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    by = {}
    for r in checks:
        if r.get("kind") in ("checkpoint", "fold_check", "train") and "generator" in r:
            by.setdefault((r["beta"], r["num_samples"], r["generator"]), []).append(r)
    for (beta, m, gen), rows in sorted(by.items()):
        points = [r for r in rows if r["kind"] == "checkpoint"]
        if not points:
            continue
        last = max(r["step"] for r in points)
        end = [r for r in points if r["step"] == last]
        folds = [r for r in rows if r["kind"] == "fold_check" and r["step"] == last]

        def mean(rs, key):
            values = [r[key] for r in rs if key in r]
            return float(np.mean(values)) if values else float("nan")

        z = mean(folds, "copying_statistic")
        low_p = np.mean([r["copying_p_value"] < 0.05 for r in folds]) if folds else np.nan
        loglik = mean(folds, "heldout_loglik")
        seconds = sum(r.get("seconds", 0.0) for r in rows if r["kind"] == "train")
        lines.append(
            f"| {beta:g} | {m} | {gen} | {mean(end, 'kl_generated'):.3f} | "
            f"{mean(end, 'cross_entropy'):.3f} ({mean(end, 'entropy_true'):.3f}) | "
            f"{mean(end, 'copy_fraction'):.3f} ({mean(end, 'expected_copy_fraction'):.3f}) | "
            f"{z:+.1f} ({low_p:.2f}) | "
            + ("–" if np.isnan(loglik) else f"{loglik:.3f}")
            + f" | {last} | {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def summary_sections(arrays, checks, config) -> list[tuple[str, str]]:
    seeds = arrays["mse_all"].shape[-1]
    sections = [
        (
            "Parameter MSE (all w and b) of the arms without a generator, mean ± s.e. over "
            "seeds (†: some seed's fit did not converge)",
            summary_table(arrays),
        )
    ]
    for gen in arrays["generators"]:
        sections.append(
            (
                f"Parameter MSE with the {gen} generator, by the rule that picks checkpoint "
                "and K (held-out rule and hindsight: K chosen per seed; ‡: non-finite "
                "generated values)",
                rules_table(arrays, gen),
            )
        )
    sections += [
        (
            "Paired differences per seed, mean ± s.e.: the held-out rule against observed "
            "only (▲: worse by more than one s.e.) and every rule's regret against the "
            "hindsight-best (checkpoint, K)",
            paired_table(arrays),
        ),
        (
            "Does augmentation beat the tuned penalty? plm's augmented arms minus tuned-L2 "
            "plm, paired per seed (negative: augmentation is better)",
            versus_l2_table(arrays) + "\n" + versus_l2_answers(arrays),
        ),
        ("Generator checks at the last checkpoint", generator_table(checks, config)),
    ]
    if "heldout" in arrays["rule_arms"]:
        sections[-2:-2] = [
            (
                "The rules per M: regret against the hindsight-best (checkpoint, K), mean "
                "over seeds and then over the β × method × generator cases; the cases where "
                "the held-out rule's regret is below the energy-variance rule's at every K, "
                "where it took K > 0, and where it is worse than observed only by more than "
                "one s.e. (▲) and two"
                + (
                    ". A case where the rule takes K > 0 at some seed but leaves the MSE "
                    "unchanged on average is marked by chance with probability "
                    f"{chance_of_worse(seeds, 1):.1%} (▲) and {chance_of_worse(seeds, 2):.1%} "
                    f"(two s.e.) with {seeds} seeds (Student's t, normal per-seed "
                    "differences)"
                    if seeds > 1
                    else ""
                ),
                regret_by_m_table(arrays) + "\n" + chance_note(arrays),
            ),
            (
                "The held-out rule's choice of K: seeds per K (0: observed only)",
                choices_table(arrays),
            ),
            (
                "The held-out rule at other margins (selection.margin_se, in standard errors "
                "of the per-spin gain over K = 0), re-applied to the run's recorded held-out "
                "scores and read off the grid, without refits: regret, cases where it took "
                "K > 0 at some seed, and where it is worse than observed only by more than "
                "one s.e. (▲) and two. It shows what the margin trades; a margin chosen from "
                "this table would be tuned on the seeds the run's numbers are scored on",
                margin_table(arrays, checks, config.selection.margin_se),
            ),
        ]
    return sections
