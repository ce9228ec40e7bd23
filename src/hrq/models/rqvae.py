"""RQ-VAE and HRQ-VAE (HRQ paper §3.2, Algorithm 1, App. C.2), and the same autoencoder around
the related quantizers (HG-Rec, HyperVQ, RSQ-VAE; :func:`hrq.quantize.build_quantizer`).

HRQ-VAE: ``x ∈ R^d -> exp0 -> hyperbolic encoder -> HRQ -> hyperbolic decoder -> log0 -> x̂``.
RQ-VAE is the same network with Euclidean layers and Euclidean RQ. Loss:
``||x - x̂||^2 + L_RQ`` (per point, averaged over the batch), or with
``reconstruction="hyperbolic"`` HG-Rec's ``d_B(exp0 x, exp0 x̂)^2 + L_RQ`` (eq. 8), or with
``reconstruction="gaussian"`` HQ-VAE's Gaussian decoder term at its maximum-likelihood variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import geoopt
import torch
from torch import nn
from torch.optim.adam import adam as adam_step

from hrq.checks import require_finite
from hrq.manifold import poincare_ball
from hrq.nn import mlp
from hrq.quantize import ResidualQuantizer, level_sizes
from hrq.quantize.residual import Geometry, ResidualRule

Reconstruction = Literal["mse", "hyperbolic", "gaussian"]

_QUANTIZER_INTERFACE = ("levels", "codebook_sizes", "dim", "geometry", "encode", "decode", "code_stats")


@dataclass
class VAEOutput:
    """Result of a :class:`ResidualQuantizedVAE` forward pass.

    Attributes:
        reconstruction: ``x̂ [N, d]`` in the input space.
        codes: ``LongTensor [N, levels]``.
        latent: ``x_s [N, h]``, the encoder output that was quantized (a point of the ball for
            HRQ-VAE).
        loss: ``reconstruction_loss + quantizer_loss``.
        reconstruction_loss: mean over points of ``||x - x̂||^2`` (``reconstruction="mse"``) or
            of ``d_B(exp0 x, exp0 x̂)^2`` (``"hyperbolic"``); ``D/2 log`` of the former
            (``"gaussian"``).
        quantizer_loss: the quantizer's own loss (codebook + commitment for RQ/HRQ/HG-Rec, zero
            for HyperVQ, RSQ's part of eq. 14).
    """

    reconstruction: torch.Tensor
    codes: torch.Tensor
    latent: torch.Tensor
    loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    quantizer_loss: torch.Tensor


class ResidualQuantizedVAE(nn.Module):
    """(H)RQ-VAE: residual-quantized autoencoder in Euclidean or Poincaré geometry.

    Args:
        input_dim: ``d``, e.g. 768 for MPNet embeddings.
        latent_dim: ``h``, the quantized dimension (paper: 32).
        hidden_dims: encoder widths (paper: 512, 256, 128); the decoder mirrors them.
        levels: ``k``, codebooks / tokens per item (default 3).
        codebook_size: codewords per level (int or one per level; default and paper: 256).
        geometry: ``"euclidean"`` (RQ-VAE: Euclidean encoder/decoder) or ``"poincare"``
            (HRQ-VAE: ``exp0``, Möbius layers, ``log0``). Default: ``"euclidean"``, or the
            ``quantizer``'s geometry when one is given.
        curvature: ball curvature ``c`` of the hyperbolic layers and of the hyperbolic
            reconstruction loss. Default: the ``quantizer``'s ``curvature`` when it has one,
            else 1.
        residual: HRQ residual rule, ``"paper"`` (default) or ``"gyro"``.
        commitment: ``α`` of the quantizer loss (default 0.25).
        quantizer: a ready quantizer (e.g. from :func:`hrq.quantize.build_quantizer`) instead of
            the :class:`~hrq.quantize.ResidualQuantizer` built from the arguments above. Its
            ``dim`` must be ``latent_dim`` and its ``geometry`` the VAE's: a quantizer whose
            inputs and outputs are points of the ball (HRQ, HyperVQ ``geometry="poincare"``)
            needs the hyperbolic encoder/decoder, a Euclidean one (RQ, HG-Rec's tangent-space
            quantizer, HyperVQ ``"euclidean"``, RSQ) the Euclidean ones. ``levels`` and
            ``codebook_size``, if given, must match it; ``residual``, ``commitment`` and
            ``quantizer_options`` then belong to the quantizer and must not be given.
        reconstruction: ``"mse"``: ``||x - x̂||^2``; ``"hyperbolic"``: HG-Rec's eq. 8
            ``L_recon = d_B(exp0 x, exp0 x̂)^2``, the squared geodesic distance on the ball of
            curvature ``c`` between the input and the output mapped by ``exp0`` (any geometry);
            ``"gaussian"``: the Gaussian decoder term ``D/2 log σ^2 + ||x - x̂||^2 / (2σ^2)`` of
            SQ-VAE / HQ-VAE (eq. 14) with ``σ^2`` at its maximum-likelihood value for the batch,
            which leaves ``D/2 log(mean_batch ||x - x̂||^2)`` up to a constant (Takida et al.'s
            code; Lin et al. 2021's AR-ELBO). Its gradient grows as the error shrinks, the
            "self-annealing" that keeps RSQ's posteriors from going uniform.
        **quantizer_options: further :class:`ResidualQuantizer` options
            (``kmeans_init``, ``dead_code_threshold``, ``loss_distance`` ...).

    Objectives of the related methods, as this VAE's ``reconstruction_loss + quantizer_loss``:

    * HG-Rec (eq. 8): Euclidean VAE, :class:`~hrq.quantize.HGRecQuantizer` (``L_rqvae``) and
      ``reconstruction="hyperbolic"`` (``L_recon``).
    * HyperVQ: the quantizer has no loss; the reconstruction term trains everything.
    * RSQ-VAE (HQ-VAE eq. 14): ``J = D/2 log σ^2 + ||x - x̂||^2 / (2σ^2) + ||Ẑ - ΣZ_l||^2 /
      (2Σ s_l^2) - Σ H(P̂_l)``. :class:`~hrq.quantize.RSQQuantizer`'s loss is the last two terms
      and ``reconstruction="gaussian"`` the first two, ``σ^2`` at its maximum-likelihood value
      as the paper does. (``"mse"`` would fix ``σ^2 = 1/2``: the entropy term then wins, ``s_l^2``
      grows, the posteriors go uniform and every codebook collapses onto one codeword.)
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 32,
        hidden_dims: Sequence[int] = (512, 256, 128),
        *,
        levels: int | None = None,
        codebook_size: int | Sequence[int] | None = None,
        geometry: Geometry | None = None,
        curvature: float | None = None,
        residual: ResidualRule | None = None,
        commitment: float | None = None,
        quantizer: nn.Module | None = None,
        reconstruction: Reconstruction = "mse",
        **quantizer_options,
    ) -> None:
        super().__init__()
        if reconstruction not in ("mse", "hyperbolic", "gaussian"):
            raise ValueError(f"reconstruction must be 'mse', 'hyperbolic' or 'gaussian', got {reconstruction!r}")
        if quantizer is None:
            geometry = geometry or "euclidean"
            curvature = 1.0 if curvature is None else curvature
        else:
            geometry, curvature = self._check_quantizer(
                quantizer, latent_dim, levels, codebook_size, geometry, curvature,
                residual=residual, commitment=commitment, options=quantizer_options,
            )
        if geometry not in ("euclidean", "poincare"):
            raise ValueError(f"geometry must be 'euclidean' or 'poincare', got {geometry!r}")
        self.geometry = geometry
        self.curvature = float(curvature)
        self.reconstruction = reconstruction
        self.ball = poincare_ball(curvature) if geometry == "poincare" else None
        if reconstruction == "hyperbolic" and self.ball is None:
            self.reconstruction_ball = poincare_ball(curvature)
        dims = [input_dim, *hidden_dims, latent_dim]
        self.encoder = mlp(dims, self.ball)
        self.decoder = mlp(dims[::-1], self.ball)
        if quantizer is None:
            quantizer = ResidualQuantizer(
                3 if levels is None else levels,
                256 if codebook_size is None else codebook_size,
                latent_dim,
                geometry=geometry,
                curvature=curvature,
                residual="paper" if residual is None else residual,
                commitment=0.25 if commitment is None else commitment,
                **quantizer_options,
            )
        self.quantizer = quantizer

    @staticmethod
    def _check_quantizer(quantizer, latent_dim, levels, codebook_size, geometry, curvature, *,
                         residual, commitment, options) -> tuple[str, float]:
        """Validate a given quantizer against the VAE arguments; return (geometry, curvature)."""
        name = type(quantizer).__name__
        missing = [a for a in _QUANTIZER_INTERFACE if not hasattr(quantizer, a)]
        if missing:
            raise TypeError(f"quantizer {name} lacks {missing}; derive it from hrq.quantize.QuantizerBase")
        extra = sorted(options) + [n for n, v in (("residual", residual), ("commitment", commitment))
                                   if v is not None]
        if extra:
            raise ValueError(f"{extra} configure the built-in ResidualQuantizer; with quantizer= "
                             f"set them on the {name} itself")
        if quantizer.dim != latent_dim:
            raise ValueError(f"quantizer {name} has dim={quantizer.dim} but latent_dim={latent_dim}")
        if levels is not None and levels != quantizer.levels:
            raise ValueError(f"levels={levels} but quantizer {name} has {quantizer.levels} levels")
        if codebook_size is not None and (
            level_sizes(quantizer.levels, codebook_size) != list(quantizer.codebook_sizes)
        ):
            raise ValueError(f"codebook_size={codebook_size!r} but quantizer {name} has "
                             f"codebook_sizes={list(quantizer.codebook_sizes)}")
        q_geometry = quantizer.geometry
        if geometry is not None and geometry != q_geometry:
            where = ("points of the Poincaré ball, which need the hyperbolic encoder/decoder"
                     if q_geometry == "poincare" else
                     "Euclidean (or tangent) vectors, which need the Euclidean encoder/decoder")
            raise ValueError(f"geometry mismatch: quantizer {name} has geometry={q_geometry!r} (its "
                             f"inputs and outputs are {where}) but the VAE geometry is {geometry!r}; "
                             f"use geometry={q_geometry!r}")
        q_curvature = getattr(quantizer, "curvature", None)
        if curvature is not None and q_curvature is not None and float(curvature) != float(q_curvature):
            raise ValueError(f"curvature={curvature} but quantizer {name} has curvature={q_curvature}")
        if curvature is None:
            curvature = 1.0 if q_curvature is None else q_curvature
        return q_geometry, curvature

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, d] -> x_s [N, h]``, the vector the quantizer sees (``E(exp0(x))`` on the ball).
        In eval mode a non-finite ``x`` is refused (:func:`hrq.checks.require_finite`); training
        steps are left to the training loop's loss check, which costs no per-step sync."""
        if not self.training:
            require_finite(x, f"{type(self).__name__} input")
        if self.ball is not None:
            x = self.ball.expmap0(x)
        return self.encoder(x)

    def from_latent(self, y: torch.Tensor) -> torch.Tensor:
        """Decode a (quantized) latent ``[N, h]`` to the input space ``[N, d]``."""
        out = self.decoder(y)
        return self.ball.logmap0(out) if self.ball is not None else out

    def reconstruction_error(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Per-point reconstruction error ``[N]``: ``||x - x̂||^2`` (``mse``, ``gaussian``) or
        ``d_B(exp0 x, exp0 x̂)^2`` (``hyperbolic``)."""
        if self.reconstruction != "hyperbolic":
            return (x - recon).pow(2).sum(-1)
        ball = self.ball if self.ball is not None else self.reconstruction_ball
        # expmap0 projects onto geoopt's float32 radius, so dist (an artanh) stays finite
        return ball.dist(ball.expmap0(x), ball.expmap0(recon)).pow(2)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        latent = self.to_latent(x)
        q = self.quantizer(latent)
        recon = self.from_latent(q.quantized)
        recon_loss = self.reconstruction_loss(x, recon)
        return VAEOutput(recon, q.codes, latent, recon_loss + q.loss, recon_loss, q.loss)

    def reconstruction_loss(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """The loss's reconstruction term of a batch ``x [..., N, d]``: the mean of
        :meth:`reconstruction_error` over its ``N`` points (``"mse"``, ``"hyperbolic"``), or
        ``D/2 log`` of it (``"gaussian"``); one value per leading index (per run of a
        :class:`~hrq.models.stacked.VAEStack`)."""
        loss = self.reconstruction_error(x, recon).mean(-1)
        if self.reconstruction == "gaussian":
            # σ^2 = loss / D maximises the likelihood; D/2 log(D) is dropped. The clamp only
            # guards an exact reconstruction (log 0).
            loss = x.shape[-1] / 2 * loss.clamp_min(torch.finfo(loss.dtype).tiny).log()
        return loss

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, levels]`` of a batch; never changes the codebooks."""
        return self.quantizer.encode(self.to_latent(x))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[N, d]`` from codes alone."""
        return self.from_latent(self.quantizer.decode(codes))

    @torch.no_grad()
    def latent_norms(self, x: torch.Tensor) -> torch.Tensor:
        """Norms ``[N]`` for the paper's Table 4: ``||x_s||`` (RQ-VAE), ``||log0(x_s)||`` (HRQ-VAE)."""
        z = self.to_latent(x)
        if self.ball is not None:
            z = self.ball.logmap0(z)
        return z.norm(dim=-1)


class _Optimizers:
    """Several optimizers stepped as one (``zero_grad``, ``step``, ``param_groups``)."""

    def __init__(self, optimizers: Sequence) -> None:
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()


class _PerRunAdam:
    """torch's fused Adam for stacked parameters whose runs have their own learning rates (a
    group's ``lr`` a tensor ``[R, 1, ...]`` along the parameters' leading run axis).

    Fused Adam takes one float lr, so each block of consecutive runs that share one gets its
    own call of the same fused kernel, on views of the stacked parameters, gradients and
    moments (``torch.optim.adam.adam``, Adam's functional form): one pass over the parameters,
    and each run's update is the one fused Adam gives it alone.
    """

    def __init__(self, groups: Sequence[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.param_groups = list(groups)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.blocks: list[tuple[torch.Tensor, int, int, float, torch.Tensor]] = []  # param, runs a:b, lr, step
        for group in self.param_groups:
            lrs = group["lr"].flatten().tolist()
            for p in group["params"]:
                if group["lr"].numel() != p.shape[0]:
                    raise ValueError(f"a per-run lr of {group['lr'].numel()} runs for a parameter of "
                                     f"{p.shape[0]} along its run axis")
                start = 0
                for stop in range(1, len(lrs) + 1):
                    if stop == len(lrs) or lrs[stop] != lrs[start]:
                        self.blocks.append((p, start, stop, lrs[start],
                                            torch.zeros((), dtype=torch.float32, device=p.device)))
                        start = stop
        self.moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p))
                        for group in self.param_groups for p in group["params"]}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        by_lr: dict[float, list] = {}
        for p, a, b, lr, step in self.blocks:
            if p.grad is not None:
                exp_avg, exp_avg_sq = self.moments[id(p)]
                by_lr.setdefault(lr, []).append((p[a:b], p.grad[a:b], exp_avg[a:b], exp_avg_sq[a:b], step))
        for lr, blocks in by_lr.items():
            params, grads, exp_avgs, exp_avg_sqs, steps = (list(x) for x in zip(*blocks))
            adam_step(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, amsgrad=False,
                      beta1=self.betas[0], beta2=self.betas[1], lr=lr, weight_decay=self.weight_decay,
                      eps=self.eps, maximize=False)


def _curved(p: torch.Tensor) -> bool:
    return hasattr(p, "manifold") and not isinstance(p.manifold, geoopt.Euclidean)


def riemannian_optimizer(params, lr: float, kind: str = "adam", **kwargs):
    """geoopt's Riemannian Adam or SGD: manifold parameters (codebooks and hyperbolic biases)
    take Riemannian steps, plain parameters ordinary ones.

    With Adam, parameters of no curved manifold (the Euclidean layers, Euclidean codebooks) go
    to torch's fused Adam instead: the same update (geoopt's Riemannian Adam on a Euclidean
    parameter is Adam) in one kernel, where geoopt's makes ~15 passes with temporaries and was
    ~60% of an RQ-VAE step on the CPU (issue 16). Only rounding differs.

    ``params``: parameters, or torch's parameter groups (dicts with ``params`` and optionally
    their own ``lr``). A group's ``lr`` may be a tensor that broadcasts over its parameters,
    e.g. ``[R, 1, 1]`` for a stacked ``[R, in, out]`` weight whose runs train at their own
    learning rates (:meth:`hrq.models.VAEStack.param_groups`): geoopt's steps multiply by it
    as they are, torch's fused Adam goes through :class:`_PerRunAdam`.
    """
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    groups = [{**group, "params": list(group["params"]), "lr": group.get("lr", lr)} for group in groups]
    if kind == "sgd":
        return geoopt.optim.RiemannianSGD(groups, lr=lr, **kwargs)
    if kind != "adam":
        raise ValueError(f"optimizer kind must be 'adam' or 'sgd', got {kind!r}")

    def split(curved: bool, per_run: bool | None = None) -> list[dict]:
        """The groups' parameters on a curved manifold (or not), of groups with a per-run lr tensor
        (``per_run``), a float lr (``not per_run``) or either (``None``)."""
        out = [{**group, "params": [p for p in group["params"] if _curved(p) == curved]} for group in groups
               if per_run is None or isinstance(group["lr"], torch.Tensor) == per_run]
        return [group for group in out if group["params"]]

    optimizers = []
    if flat := split(curved=False, per_run=False):
        optimizers.append(torch.optim.Adam(flat, lr=lr, fused=True, **kwargs))
    if flat_per_run := split(curved=False, per_run=True):
        optimizers.append(_PerRunAdam(flat_per_run, **kwargs))
    if curved := split(curved=True):
        optimizers.append(geoopt.optim.RiemannianAdam(curved, lr=lr, **kwargs))
    return _Optimizers(optimizers)
