"""Autoencoders that learn multitokens: RQ-VAE and HRQ-VAE."""

from hrq.models.rqvae import ResidualQuantizedVAE, VAEOutput, riemannian_optimizer
from hrq.models.stacked import VAEStack
from hrq.models.training import evaluate_vae, init_codebooks, min_kmeans_sample, train_vae, train_vaes

__all__ = ["ResidualQuantizedVAE", "VAEOutput", "VAEStack", "evaluate_vae", "init_codebooks", "min_kmeans_sample",
           "riemannian_optimizer", "train_vae", "train_vaes"]
