"""summary.md of the `augment` pipeline: its markdown tables, from the arrays of
isingjax/pipelines/augment_records.py, and its sections (the held-out rule's analyses
across cases are in isingjax/pipelines/augment_heldout_summary.py)."""

from __future__ import annotations

import numpy as np

from isingjax.pipelines import common
from isingjax.pipelines.augment_heldout_summary import (
    chance_note,
    chance_of_worse,
    margin_table,
    regret_by_m_table,
)
from isingjax.pipelines.augment_records import base_values, label, rule_values
from isingjax.pipelines.common import paired_delta, worse_by


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
            conv = rule_values(arrays, at, gen, arm, ratio, "converged")
            nonfinite = rule_values(arrays, at, gen, arm, ratio, "num_nonfinite")
            out.append(_cell(rule_values(arrays, at, gen, arm, ratio), conv, nonfinite))
        return out

    return _table([label(a, r) for a, r in cols], arrays, row)


def _delta(a, b, worse_mark=False) -> str:
    mu, e = paired_delta(a, b)
    if np.isnan(mu):
        return "–"
    mark = " ▲" if worse_mark and worse_by(a, b) else ""
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
        observed = base_values(arrays, at, "observed", 0)
        out = []
        if "heldout" in arrays["rule_arms"]:
            out += [_delta(rule_values(arrays, at, g, "heldout", 0), observed, True) for g in gens]
        for g in gens:
            best = rule_values(arrays, at, g, "hindsight", 0)
            out += [_delta(rule_values(arrays, at, g, a, r), best) for a, r in rules]
        return out

    return _table(heads, arrays, row)


def choices_table(arrays) -> str:
    """Markdown: per generator, how many seeds the held-out rule gave each K (0: observed
    only), e.g. '0:5 1M:3'."""
    gens = arrays["generators"].tolist()

    def row(at):
        cells = []
        for g in gens:
            ratios = rule_values(arrays, at, g, "heldout", 0, field="chosen_ratio")
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
        l2 = base_values(arrays, at, "l2", 0)
        return [_delta(rule_values(arrays, at, g, a, r), l2) for g in gens for a, r in rules]

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
        cases, wins = [], []  # (mean, s.e., arm label, beta)
        for i, beta in enumerate(arrays["betas"]):
            l2 = base_values(arrays, (i, j, k), "l2", 0)
            for a, r in rules:
                arm = rule_values(arrays, (i, j, k), g, a, r)
                mu, e = paired_delta(arm, l2)
                if not np.isnan(mu):
                    cases.append((float(mu), float(e), label(a, r), beta))
                    if worse_by(l2, arm):
                        wins.append(cases[-1])
        if not cases:
            continue
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
    seconds (wall time of all seeds, full + fold generators, over resumes; a block's
    generators and fits run side by side, so each one's share the CPU with the others')."""
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
        (
            "Generator checks at the last checkpoint (train s: wall seconds, while the block's "
            "other tasks ran beside it)",
            generator_table(checks, config),
        ),
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
                "of the per-spin gain over K = 0) without the folds' confirmation, and at the "
                "run's margin with other confirmations (selection.confirm_se, in a fold's "
                "standard errors), re-applied to the run's recorded held-out scores and read "
                "off the grid, without refits: regret, cases where it took K > 0 at some "
                "seed, and where it is worse than observed only by more than one s.e. (▲) "
                "and two. It shows what each setting trades; a setting chosen from this "
                "table would be tuned on the seeds the run's numbers are scored on",
                margin_table(
                    arrays, checks, config.selection.margin_se, config.selection.confirm_se
                ),
            ),
        ]
    return sections
