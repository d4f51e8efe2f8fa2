"""Spins from a trained DDPM, as a user calls it: checked in Python, then one cached jit.

    spins = generate.sample(key, net, params, schedule, num_samples=1000)

`net` (a ScoreNet, hashable by its fields), the sample count, the sampler and its number
of steps select the compiled program; new network parameters or a new key of the same
shapes run it again without compiling.
"""

from __future__ import annotations

import functools

import jax

from isingjax.diffusion import sampling
from isingjax.diffusion.schedule import Schedule
from isingjax.diffusion.score_net import ScoreNet


@functools.partial(jax.jit, static_argnames=("net", "num_samples", "sampler", "num_steps"))
def _sample(key, params, schedule, *, net, num_samples, sampler, num_steps):
    return sampling.sample_spins(
        key,
        lambda x, t: net.apply(params, x, t),
        schedule,
        num_samples=num_samples,
        n=net.n,
        sampler=sampler,
        num_steps=num_steps,
    )


def sample(
    key: jax.Array,
    net: ScoreNet,
    params,
    schedule: Schedule,
    *,
    num_samples: int,
    sampler: str = "ddim",
    num_steps: int = 50,
) -> jax.Array:
    """num_samples spins [num_samples, net.n] (float32 ±1) from the network `net` with
    parameters `params` under `schedule`: the ancestral sampler ('ddpm', all T steps) or
    DDIM on `num_steps` steps ('ddim'), thresholded at 0."""
    if not isinstance(net, ScoreNet):
        raise TypeError(f"net must be an isingjax ScoreNet, got {type(net).__name__}.")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule (make_schedule), got {type(schedule)}.")
    if sampler not in sampling.SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sampling.SAMPLERS}.")
    for name, value, high in (
        ("num_samples", num_samples, None),
        ("num_steps", num_steps, schedule.num_steps),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if high is not None and value > high:
            raise ValueError(f"{name} must be at most the schedule's {high} steps, got {value}.")
    if sampler == "ddpm":
        num_steps = schedule.num_steps  # the ancestral sampler always runs every step
    return _sample(
        key,
        params,
        schedule,
        net=net,
        num_samples=num_samples,
        sampler=sampler,
        num_steps=num_steps,
    )
