"""Is a pairwise Ising model any good for the retina patterns (the checks of Schneidman et
al. 2006 and Tkačik et al. 2014)? Statistics of held-out (test) patterns against those of
samples of each fitted model, beside the independent-neuron model and the training
patterns themselves (the floor set by sampling noise and by the difference of repeats).

Statistics are those of the activity sigma = (s + 1) / 2 in {0, 1} (the neuroscience
convention): firing rates <sigma_i>, connected pairwise correlations
C_ij = <sigma_i sigma_j> - <sigma_i><sigma_j> (i < j), connected third-order correlations
C_ijk = <d_i d_j d_k> with d = sigma - <sigma> (i < j < k), and P(K), the distribution of
the number K of neurons active in a bin.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from isingjax import mcmc
from isingjax.inference import plm
from isingjax.models import IsingParams

PK_FLOOR = 0.5  # model P(K) = (count + PK_FLOOR) / (N + (n + 1) PK_FLOOR) in the KL


def statistics(spins: jax.Array) -> dict:
    """spins [M, n] ±1 -> {'rates' [n], 'corr' [n(n-1)/2], 'corr3' [n(n-1)(n-2)/6],
    'pk' [n + 1] (probabilities)}."""
    n = spins.shape[1]
    sigma = (spins + 1.0) / 2.0
    rates = jnp.mean(sigma, axis=0)
    d = sigma - rates
    cov = d.T @ d / spins.shape[0]
    rows, cols = jnp.triu_indices(n, k=1)
    triples = np.asarray(list(itertools.combinations(range(n), 3)), np.int32).reshape(-1, 3)
    i, j, k = (jnp.asarray(triples[:, a]) for a in range(3))
    third = _third_moment(d) / spins.shape[0]
    counts = jnp.sum(sigma, axis=1).astype(jnp.int32)
    pk = jnp.zeros(n + 1).at[counts].add(1.0) / spins.shape[0]
    return {"rates": rates, "corr": cov[rows, cols], "corr3": third[i, j, k], "pk": pk}


def _third_moment(d: jax.Array, chunk: int = 1024) -> jax.Array:
    """sum_m d_mi d_mj d_mk [n, n, n], accumulated over chunks of rows (zero-padded)."""
    m, n = d.shape
    padded = jnp.pad(d, ((0, (-m) % chunk), (0, 0))).reshape(-1, chunk, n)

    def add(total, x):
        pair = (x[:, :, None] * x[:, None, :]).reshape(chunk, n * n)
        return total + (pair.T @ x).reshape(n, n, n), None

    return jax.lax.scan(add, jnp.zeros((n, n, n), d.dtype), padded)[0]


def compare(model: dict, data: dict, num_model_samples: int) -> dict:
    """RMS differences of the statistics of a model (or data set) from those of the test
    patterns, the total-variation distance of P(K), and KL(P_test(K) || P_model(K)) with
    the model's P(K) smoothed by PK_FLOOR pseudo-counts per K."""
    n1 = model["pk"].shape[0]
    q = (model["pk"] * num_model_samples + PK_FLOOR) / (num_model_samples + n1 * PK_FLOOR)
    p = data["pk"]
    return {
        "rmse_rates": jnp.sqrt(jnp.mean((model["rates"] - data["rates"]) ** 2)),
        "rmse_corr": jnp.sqrt(jnp.mean((model["corr"] - data["corr"]) ** 2)),
        "rmse_corr3": jnp.sqrt(jnp.mean((model["corr3"] - data["corr3"]) ** 2)),
        "pk_tv": 0.5 * jnp.sum(jnp.abs(model["pk"] - p)),
        "pk_kl": jnp.sum(
            jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q)), 0.0)
        ),
    }


def pseudo_nll(params: IsingParams, spins: jax.Array) -> jax.Array:
    """Mean negative pseudo-log-likelihood per pattern, sum_i log(1 + exp(-2 s_i h_i))."""
    p = jnp.full(spins.shape[0], 1.0 / spins.shape[0])
    return plm.loss(params, spins, p, l2=0.0, l2_bias=0.0)


def independent_nll(rates: jax.Array, spins: jax.Array) -> jax.Array:
    """Mean negative log-likelihood per pattern under independent neurons with P(spike) =
    rates [n] (for independent neurons it equals the pseudo-log-likelihood)."""
    p = jnp.where(spins > 0, rates, 1.0 - rates)
    return -jnp.mean(jnp.sum(jnp.log(p), axis=1))


def sample_models(config, keys, params: IsingParams, starts: jax.Array):
    """Samples [S, N, n] of each seed's model (vmapped over seeds) and diagnostics.

    Metropolis runs twice: chains started from training patterns starts [S, chains, n]
    and chains started uniformly at random. A model with a second, metastable mode (the
    sparse retina patterns can give one of high activity) traps the chains of one start
    and not of the other, which the autocorrelation time of a single run cannot see; so
    when the mean energies of the two runs differ by more than config.fit.init_gap_tol
    standard deviations of the energy, or the autocorrelation time exceeds
    config.fit.tempering_above records, the samples come from parallel tempering (started
    from the training patterns), else from the data-started Metropolis run.
    Diagnostics [S]: acceptance_rate, autocorr_time, init_gap (that difference) and
    tempered (whether parallel tempering made the samples)."""
    s = config.sampler
    sizes = {"num_samples": config.fit.num_samples, "num_chains": s.num_chains}
    sizes |= {"burn_in": s.burn_in, "thin": s.thin}
    data_start = jax.jit(jax.vmap(lambda k, p, x: mcmc.metropolis(k, p, init_spins=x, **sizes)))
    samples, info = data_start(keys, params, starts)
    random_start = jax.jit(jax.vmap(lambda k, p: mcmc.metropolis(k, p, **sizes)))
    _, other = random_start(jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys), params)
    e_data, e_other = info.energy_trace, other.energy_trace  # [S, per chain, chains]
    spread = jnp.sqrt(0.5 * (jnp.var(e_data, axis=(1, 2)) + jnp.var(e_other, axis=(1, 2))))
    gap = jnp.abs(jnp.mean(e_data, axis=(1, 2)) - jnp.mean(e_other, axis=(1, 2))) / spread
    tau = jnp.maximum(info.autocorr_time, other.autocorr_time)
    tempered = bool(
        np.max(np.asarray(gap)) > config.fit.init_gap_tol
        or np.max(np.asarray(tau)) > config.fit.tempering_above
    )
    if tempered:
        betas = mcmc.geometric_betas(s.num_temps, s.beta_min)
        run = jax.jit(
            jax.vmap(
                lambda k, p, x: mcmc.parallel_tempering(k, p, betas=betas, init_spins=x, **sizes)
            )
        )
        samples, info = run(keys, params, starts)
    diagnostics = {
        "acceptance_rate": info.acceptance_rate,
        "autocorr_time": jnp.maximum(info.autocorr_time, tau if not tempered else 0.0),
        "init_gap": gap,
        "tempered": jnp.full(gap.shape, tempered),
    }
    return samples, diagnostics
