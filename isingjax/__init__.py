"""isingjax: inverse Ising inference, exact enumeration, sampling and diffusion augmentation."""

from isingjax import exact, inference, io, mcmc, metrics
from isingjax.inference import infer, infer_with_info
from isingjax.mcmc import metropolis, parallel_tempering
from isingjax.models import (
    IsingParams,
    Moments,
    energy,
    flatten_params,
    sk_model,
    symmetrize,
    unflatten_params,
)

__all__ = [
    "IsingParams",
    "Moments",
    "energy",
    "exact",
    "infer",
    "infer_with_info",
    "inference",
    "flatten_params",
    "io",
    "mcmc",
    "metrics",
    "metropolis",
    "parallel_tempering",
    "sk_model",
    "symmetrize",
    "unflatten_params",
]
