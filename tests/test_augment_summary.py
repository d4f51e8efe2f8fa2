"""The markdown of augment's summary.md (isingjax/pipelines/augment_summary.py and
augment_heldout_summary.py) on hand-made result arrays, against hand-computed cells."""

import numpy as np
import pytest
from scipy import stats

from isingjax.pipelines import augment_heldout_summary, augment_summary, common


def _arrays():
    """Result arrays of one beta, one M, methods (plm, erasure), 2 seeds, ratios (1,) and
    one generator."""
    arms = ["observed", "bootstrap", "oracle", "l2"]
    mse = np.full((1, 1, 2, 4, 2), np.nan)
    mse[0, 0, 0] = [[1.0, 3.0], [2.0, 2.0], [0.2, 0.4], [0.25, 0.5]]
    mse[0, 0, 1, :3] = [[4.0, 4.0], [1.0, 1.0], [1.0, 3.0]]
    converged = np.where(np.isnan(mse), np.nan, 1.0)
    converged[0, 0, 1, 1, 1] = 0.0  # erasure, bootstrap, seed 1 did not converge
    rule_arms = ["energy_variance", "heldout", "hindsight", "generated_l2"]
    gen = np.full((1, 1, 2, 1, 4, 2), np.nan)
    gen[0, 0, 0, 0] = [[0.5, 1.5], [1.0, 2.0], [0.5, 1.5], [0.0, 1.0]]
    gen[0, 0, 1, 0, :3] = [[5.0, 7.0], [4.0, 5.0], [4.0, 4.0]]
    gen_nonfinite = np.zeros(gen.shape)
    gen_nonfinite[0, 0, 0, 0, 3, 0] = 3.0  # plm's generated_l2 spins of seed 0
    return {
        "mse_all": mse,
        "converged": converged,
        "num_nonfinite": np.full(mse.shape, np.nan),
        "gen_mse_all": gen,
        "gen_converged": np.where(np.isnan(gen), np.nan, 1.0),
        "gen_num_nonfinite": gen_nonfinite,
        # the held-out rule's K per seed: observed only at seed 0, K = 1 M at seed 1
        "gen_chosen_ratio": np.where(np.isnan(gen), np.nan, np.asarray([0.0, 1.0])),
        "betas": np.asarray([0.5]),
        "sample_sizes": np.asarray([100]),
        "methods": np.asarray(["plm", "erasure"]),
        "generators": np.asarray(["ddpm"]),
        "arms": np.asarray(arms),
        "ratios": np.asarray([0, 1, 1, 0]),
        "rule_arms": np.asarray(rule_arms),
        "rule_ratios": np.asarray([1, 0, 0, 1]),
        "seeds": np.arange(2),
    }


def test_summary_tables_match_hand_computed_cells():
    table = augment_summary.summary_table(_arrays()).splitlines()
    assert table[0] == (
        "| β | M | method | observed | bootstrap K=1M | oracle K=1M | tuned L2 (plm) |"
    )
    # plm: means 2, 2, 0.3, 0.375; s.e. |a - b| / 2 = 1, 0, 0.1, 0.125.
    assert table[2] == (
        "| 0.5 | 100 | plm | 2.00e+00 ± 1e+00 | 2.00e+00 ± 0e+00 "
        "| 3.00e-01 ± 1e-01 | 3.75e-01 ± 1e-01 |"
    )
    assert table[3] == (
        "| 0.5 | 100 | erasure | 4.00e+00 ± 0e+00 | 1.00e+00 ± 0e+00† | 2.00e+00 ± 1e+00 | – |"
    )
    rules = augment_summary.rules_table(_arrays(), "ddpm").splitlines()
    assert rules[0] == (
        "| β | M | method | energy variance K=1M | held-out rule | hindsight best "
        "| + tuned L2 (plm) |"
    )
    assert rules[2] == (
        "| 0.5 | 100 | plm | 1.00e+00 ± 5e-01 | 1.50e+00 ± 5e-01 | 1.00e+00 ± 5e-01 "
        "| 5.00e-01 ± 5e-01‡ |"
    )
    arrays = _arrays()
    arrays["mse_all"][0, 0, 1] = np.nan  # erasure not computed: its row is left out
    assert len(augment_summary.summary_table(arrays).splitlines()) == 3


def test_paired_delta_and_tables_match_hand_computed_differences():
    mean, se = common.paired_delta([[1.0, 4.0, 2.0]], [[0.0, 1.0, 2.0]])
    # differences 1, 3, 0: mean 4 / 3, s.d. sqrt(((1 - 4/3)^2 + (3 - 4/3)^2 + 16/9) / 2)
    sd = np.sqrt(((1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2 + (4 / 3) ** 2) / 2)
    np.testing.assert_allclose(mean, [4 / 3])
    np.testing.assert_allclose(se, [sd / np.sqrt(3)])
    table = augment_summary.paired_table(_arrays()).splitlines()
    # plm: held-out - observed = 0, -1 (mean -0.5, s.e. 0.5); regrets: energy variance
    # 0, 0; held-out 0.5, 0.5. erasure: held-out - observed = 0, 1 (mean 0.5 = s.e.:
    # not worse by more than one s.e.); regrets 1, 3 (2 ± 1) and 0, 1 (0.5 ± 0.5).
    assert table[2] == (
        "| 0.5 | 100 | plm | -5.00e-01 ± 5e-01 | +0.00e+00 ± 0e+00 | +5.00e-01 ± 0e+00 |"
    )
    assert table[3] == (
        "| 0.5 | 100 | erasure | +5.00e-01 ± 5e-01 | +2.00e+00 ± 1e+00 | +5.00e-01 ± 5e-01 |"
    )
    arrays = _arrays()
    arrays["gen_mse_all"][0, 0, 1, 0, 1] = [5.0, 6.0]  # held-out - observed = 1, 2
    assert augment_summary.paired_table(arrays).splitlines()[3].split(" | ")[3].endswith("▲")
    # plm against the tuned penalty (0.25, 0.5): energy variance 0.25, 1.0; held-out
    # 0.75, 1.5; + tuned L2 -0.25, 0.5. erasure has no tuned arm.
    versus = augment_summary.versus_l2_table(_arrays()).splitlines()
    assert versus[2] == (
        "| 0.5 | 100 | plm | +6.25e-01 ± 4e-01 | +1.12e+00 ± 4e-01 | +1.25e-01 ± 4e-01 |"
    )
    assert len(versus) == 3
    # the answer at the smallest M: no arm is below tuned L2 by more than one s.e.; the
    # closest is + tuned L2 (differences -0.25, 0.5). With the held-out arm at 0, 0.25
    # (differences -0.25, -0.25: s.e. 0) it wins, and only it is named.
    answers = augment_summary.versus_l2_answers(_arrays()).splitlines()
    assert answers[2:] == [
        "* ddpm: no; the closest: + tuned L2 (plm) at β = 0.5 (+1.25e-01 ± 4e-01)"
    ]
    arrays_win = _arrays()
    arrays_win["gen_mse_all"][0, 0, 0, 0, 1] = [0.0, 0.25]
    answers = augment_summary.versus_l2_answers(arrays_win).splitlines()
    assert answers[0].startswith("At M = 100, does an augmented plm arm beat tuned-L2 plm")
    assert answers[2:] == ["* ddpm: yes: held-out rule at β = 0.5 (-2.50e-01 ± 0e+00)"]
    # per M, over the 2 cases (plm, erasure): regrets held-out 0.5 and 0.5 (mean 0.5),
    # energy variance 0 and 2 (mean 1); held-out below every EV K for erasure only; K > 0
    # at seed 1 in both cases; no ▲
    by_m = augment_heldout_summary.regret_by_m_table(_arrays()).splitlines()
    assert by_m[0] == (
        "| M | cases | held-out rule | energy variance K=1M | held-out below every EV K "
        "| held-out K > 0 at some seed | held-out ▲ | held-out worse by > 2 s.e. |"
    )
    assert by_m[2:] == ["| 100 | 2 | 5.00e-01 | 1.00e+00 | 1 | 2 | 0 | 0 |"]
    # the held-out rule's K per seed (plm: 0 and 4 M; erasure: 1 M twice)
    arrays_k = _arrays()
    arrays_k["gen_chosen_ratio"] = np.full(arrays_k["gen_mse_all"].shape, np.nan)
    arrays_k["gen_chosen_ratio"][0, 0, :, 0, 1] = [[0, 4], [1, 1]]
    assert augment_summary.choices_table(arrays_k).splitlines()[2:] == [
        "| 0.5 | 100 | plm | 0:1 4M:1 |",
        "| 0.5 | 100 | erasure | 1M:2 |",
    ]
    # erasure's held-out regret 1, 2 (1.5 < 2) and its ▲ from above: held-out - observed
    # = 1, 2, mean 1.5 and s.e. 0.5, so worse by more than two s.e. as well
    assert augment_heldout_summary.regret_by_m_table(arrays).splitlines()[2:] == [
        "| 100 | 2 | 1.00e+00 | 1.00e+00 | 1 | 2 | 1 | 1 |"
    ]
    # 2 seeds: Student's t with 1 degree of freedom is Cauchy, P(T > x) = 1/2 - atan(x)/pi
    assert augment_heldout_summary.chance_of_worse(2, 1.0) == pytest.approx(0.25)
    assert augment_heldout_summary.chance_of_worse(2, 2.0) == pytest.approx(
        0.5 - np.arctan(2) / np.pi
    )
    # Over both cases (K > 0 at some seed in each), one ▲ that is also > 2 s.e.: by chance
    # at most 2 p of each, none with probability (1 - p)^2, one or more with 1 - (1 - p)^2
    p1, p2 = 0.25, 0.5 - np.arctan(2) / np.pi
    note = augment_heldout_summary.chance_note(arrays)
    assert note.startswith("Over every M the held-out rule took K > 0 at some seed in 2 of 2")
    assert f"at most {2 * p1:.1f} ▲ and {2 * p2:.1f} worse by > 2 s.e." in note
    assert "(observed: 1 and 1)" in note
    for head, p in (("no ▲ at all", p1), ("> 2 s.e.: none", p2)):
        assert (
            f"{head} with probability {(1 - p) ** 2:.1%}, "
            f"1 or more with probability at most {1 - (1 - p) ** 2:.2f}"
        ) in note
    # nothing marked: no tail probability is quoted; erasure's held-out rule is worse than
    # observed only at seed 1 alone (by 1), which the note names
    assert "or more" not in augment_heldout_summary.chance_note(_arrays())
    assert augment_heldout_summary.chance_note(_arrays()).endswith(
        "so never ▲: 1 case (β = 0.5, M = 100, erasure, ddpm: +1.00e+00, the difference at "
        "that seed).\n"
    )
    assert "No case is worse than observed only at exactly one seed." in note
    single = {k: v[..., :1] if k in ("mse_all", "gen_mse_all") else v for k, v in arrays.items()}
    assert augment_heldout_summary.chance_note(single) == ""


def test_worse_by_agrees_with_scipys_t_statistic_and_never_marks_one_changed_seed():
    rng = np.random.default_rng(0)
    for num_seeds in (2, 3, 8):
        for _ in range(200):
            a, b = rng.normal(0.3, 1.0, num_seeds), rng.normal(0.0, 1.0, num_seeds)
            t = stats.ttest_rel(a, b).statistic  # mean / s.e. of the paired difference
            for num_se in (1.0, 2.0):
                assert common.worse_by(a, b, num_se) == (t > num_se)
            # one changed seed: mean == s.e. in exact arithmetic (t = 1) whatever the size;
            # plain floating point calls about a third of these worse
            one = np.zeros(num_seeds)
            one[rng.integers(num_seeds)] = rng.uniform(1e-6, 1e2)
            assert not common.worse_by(one, np.zeros(num_seeds))
    # equal differences at every seed (s.e. 0) are worse; no difference is not
    assert common.worse_by(np.ones(3), np.zeros(3), 2.0)
    assert not common.worse_by(np.zeros(3), np.zeros(3))


def test_margin_table_reapplies_the_rule_to_recorded_scores():
    # One case (plm, one generator), 2 seeds, checkpoints 50 and 100, K in {0, 1 M}.
    # Seed 0's best cell (step 50, K = M) gains 3 s.e. over K = 0, seed 1's (step 100,
    # K = M) 1.5 s.e.
    grid = np.asarray([[[0.5, 2.0]], [[0.8, 0.6]]])  # [checkpoint, ratio, seed]
    arrays = {
        "mse_all": np.asarray([0.4, 0.5]).reshape(1, 1, 1, 1, 2),  # observed only
        "arms": np.asarray(["observed"]),
        "ratios": np.asarray([0]),
        # the hindsight arm: the grid's or observed's minimum per seed; energy variance
        # K = M at regret 0.06, 0.06
        "gen_mse_all": np.asarray([[0.5, 0.6], [0.4, 0.5], [0.46, 0.56]]).reshape(1, 1, 1, 1, 3, 2),
        "rule_arms": np.asarray(["heldout", "hindsight", "energy_variance"]),
        "rule_ratios": np.asarray([0, 0, 1]),
        "grid_mse_all": grid.reshape(1, 1, 1, 1, 2, 1, 2),
        "grid_steps": np.asarray([[50, 100]]),
        "grid_ratios": np.asarray([1]),
        "betas": np.asarray([1.0]),
        "sample_sizes": np.asarray([100]),
        "methods": np.asarray(["plm"]),
        "generators": np.asarray(["ddpm"]),
        "seeds": np.arange(2),
    }
    scores = {
        (0, 50): [0.0, 0.3],
        (0, 100): [0.0, 0.1],
        (1, 50): [0.0, 0.05],
        (1, 100): [0.0, 0.15],
    }
    checks = [
        {"kind": "heldout", "beta": 1.0, "num_samples": 100, "method": "plm",
         "generator": "ddpm", "seed": seed, "step": step, "scores": v, "se": [0.0, 0.1],
         "fold_scores": [v, v]}
        for (seed, step), v in scores.items()
    ]  # fmt: skip
    table = augment_heldout_summary.margin_table(
        arrays, checks, 1.0, 2.0, margins=(0.0, 2.0, 3.0), confirms=(1.0, 3.0)
    )
    # Without confirmation: margins 0 and 1: K = M at both seeds, MSE 0.5 and 0.6
    # (observed 0.4, 0.5: worse by 0.1 at both, s.e. 0: ▲ and > 2 s.e.; regret 0.1);
    # margin 2: seed 1 keeps K = 0 (0.5): differences 0.1, 0 (mean 0.05 = s.e.: no ▲),
    # regret 0.05; margin 3: a gain of 3 s.e. is not more than 3, so observed only at both
    # seeds. Below the energy-variance rule's regret (0.06) at margins 2 and 3.
    # With margin 1 and confirmation c (both folds score like the pool, so each confirms
    # the pooled pick if its gain exceeds c sqrt(2) 0.1): seed 0's gain 0.3 passes c = 1
    # and 2, not 3; seed 1's 0.15 only c = 1.
    assert table.splitlines()[2:] == [
        "| 100 | 0 | off | 1 | 1.00e-01 | no | 1 | 1 | 1 |",
        "| 100 | 1 | off | 1 | 1.00e-01 | no | 1 | 1 | 1 |",
        "| 100 | 2 | off | 1 | 5.00e-02 | yes | 1 | 0 | 0 |",
        "| 100 | 3 | off | 1 | 0.00e+00 | yes | 0 | 0 | 0 |",
        "| 100 | 1 | 1 | 1 | 1.00e-01 | no | 1 | 1 | 1 |",
        "| 100 | 1 | 2 (this run) | 1 | 5.00e-02 | yes | 1 | 0 | 0 |",
        "| 100 | 1 | 3 | 1 | 0.00e+00 | yes | 0 | 0 | 0 |",
    ]
    arrays["rule_arms"][2] = "generated_l2"  # no energy-variance arm: nothing to compare
    reapply = augment_heldout_summary.margin_table
    assert "| 100 | 3 | off | 1 | 0.00e+00 | – | 0 | 0 | 0 |" in reapply(
        arrays, checks, 1.0, 0.0, margins=(3.0,), confirms=()
    )
    # records without per-fold scores (runs before them) are left out
    old = [{k: v for k, v in r.items() if k != "fold_scores"} for r in checks]
    assert reapply(arrays, old, 1.0, 2.0).splitlines()[2:] == []
    # a case whose scores are incomplete (a checkpoint missing at a seed) is left out
    assert reapply(arrays, checks[:-1], 1.0, 2.0).splitlines()[2:] == []
