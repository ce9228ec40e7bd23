"""Autoencoders that learn multitokens: RQ-VAE and HRQ-VAE."""

from hrq.models.rqvae import ResidualQuantizedVAE, VAEOutput, riemannian_optimizer
from hrq.models.training import evaluate_vae, train_vae

__all__ = ["ResidualQuantizedVAE", "VAEOutput", "evaluate_vae", "riemannian_optimizer", "train_vae"]
