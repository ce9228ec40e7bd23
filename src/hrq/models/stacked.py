"""R independent (H)RQ-VAEs of one shape as one module (issue 16).

The 8 seeds of a Tables 2-4 cell train the same network, and one run's steps are small, so a
run's time goes mostly to per-step overhead (kernel launches, Python, the optimizer's loop over
parameters). :class:`VAEStack` stacks every weight on a leading run axis: each encoder/decoder
layer is one batched matmul for all R runs, the quantizer one
:class:`~hrq.quantize.stacked.StackedResidualQuantizer`, and one optimizer step updates all runs.

Runs stay independent: run ``r``'s points only meet run ``r``'s weights and codewords, the per-run
losses ``[R]`` are summed for the backward pass (so each run gets exactly its own gradient), and
geoopt's Adam/SGD act elementwise (row-wise on the ball). What differs from R separate models is
only floating-point rounding of the batched GEMMs.
"""

from __future__ import annotations

from typing import Sequence

import geoopt
import torch
from geoopt.manifolds.stereographic import math as gmath
from torch import nn

from hrq.models.rqvae import ResidualQuantizedVAE, VAEOutput
from hrq.nn import MobiusLinear
from hrq.quantize.stacked import MemberQuantizers, stack_quantizers

__all__ = ["StackedLinear", "VAEStack"]


def _mobius_matvec(ball: geoopt.PoincareBall, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``ball.mobius_matvec(W_r, x[r])`` for every run, ``x [R, N, in] -> [R, N, out]``, with
    ``weight [R, in, out]`` the ``W_rᵀ`` stacked (as :class:`StackedLinear` stores them).

    geoopt's formula (its clamps, its projection) with ``x W_rᵀ`` as one ``bmm``: geoopt's own
    broadcast matmul would expand the weights to ``[R, N, out, in]``.
    """
    k = ball.k
    x_norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    mx = torch.bmm(x, weight)
    mx_norm = mx.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    res = gmath.tan_k(mx_norm / x_norm * gmath.artan_k(x_norm, k), k) * (mx / mx_norm)
    res = torch.where((mx == 0).all(-1, keepdim=True), torch.zeros((), dtype=res.dtype, device=res.device), res)
    return ball.projx(res)


class StackedLinear(nn.Module):
    """R ``nn.Linear`` layers, or R :class:`~hrq.nn.MobiusLinear` layers on one ball, as one.

    ``weight [R, in, out]``, the members' weights transposed: ``x W`` is then a ``bmm`` of
    contiguous operands whose weight gradient comes out in the weight's own layout (weights
    stacked as ``[R, out, in]`` cost a transposing copy of weight and gradient per step, +12% of a
    CPU step at the paper shape).
    ``bias [R, out]`` (for Möbius layers a point of the ball per run, a
    :class:`geoopt.ManifoldParameter`). Shapes: ``[R, N, in] -> [R, N, out]``: one ``baddbmm``
    for Euclidean layers, ``(W_r ⊗_c x) ⊕_c b_r`` with one ``bmm`` inside for Möbius ones.
    The member layers are kept (not as submodules) for :meth:`write_back`.
    """

    def __init__(self, layers: Sequence[nn.Linear | MobiusLinear]) -> None:
        super().__init__()
        first = layers[0]
        self.ball = first.ball if isinstance(first, MobiusLinear) else None
        self._members = tuple(layers)
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]))
        if first.bias is None:
            self.register_parameter("bias", None)
        else:
            bias = torch.stack([layer.bias.detach() for layer in layers])
            self.bias = (nn.Parameter(bias) if self.ball is None
                         else geoopt.ManifoldParameter(bias, manifold=self.ball))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ball is None:
            if self.bias is None:
                return torch.bmm(x, self.weight)
            return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)
        y = _mobius_matvec(self.ball, self.weight, x)
        if self.bias is not None:
            y = self.ball.mobius_add(y, self.bias.unsqueeze(1))
        return self.ball.projx(y)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy run ``r``'s weight and bias into member layer ``r``."""
        for run, layer in enumerate(self._members):
            layer.weight.copy_(self.weight[run].t())
            if self.bias is not None:
                layer.bias.copy_(self.bias[run])

    def extra_repr(self) -> str:
        runs, inp, out = self.weight.shape
        return f"runs={runs}, in_features={inp}, out_features={out}, mobius={self.ball is not None}"


def _stack_mlp(mlps: Sequence[nn.Sequential]) -> nn.Sequential:
    """The members' MLPs (:func:`hrq.nn.mlp`) as one: linear layers stacked, the untrained
    activations (ReLU, exp0 ∘ ReLU ∘ log0) shared, as they act on any leading dims."""
    layers: list[nn.Module] = []
    for parts in zip(*mlps):
        if isinstance(parts[0], (nn.Linear, MobiusLinear)):
            layers.append(StackedLinear(parts))
        elif not any(p.requires_grad for p in parts[0].parameters()):  # the ball's curvature is fixed
            layers.append(parts[0])
        else:
            raise TypeError(f"cannot stack a {type(parts[0]).__name__} layer")
    return nn.Sequential(*layers)


def _shape(model: ResidualQuantizedVAE) -> dict[str, object]:
    """What two VAEs must share to train as one stack."""
    q = model.quantizer
    return {"layers": [(type(m).__name__, [tuple(p.shape) for p in m.parameters()])
                       for m in (*model.encoder, *model.decoder)],
            "geometry": model.geometry, "curvature": model.curvature, "reconstruction": model.reconstruction,
            "quantizer": type(q).__name__, "levels": q.levels, "codebook_sizes": list(q.codebook_sizes),
            "dtype": model.encoder[0].weight.dtype, "device": model.encoder[0].weight.device}


class VAEStack(nn.Module):
    """R :class:`~hrq.models.rqvae.ResidualQuantizedVAE` members of one shape trained as one.

    Encoder and decoder layers become :class:`StackedLinear` layers; the quantizers one
    :class:`~hrq.quantize.stacked.StackedResidualQuantizer` when
    :func:`~hrq.quantize.stacked.stackable` (RQ-VAE, HRQ-VAE), else :class:`~hrq.quantize.stacked.MemberQuantizers`.
    :meth:`forward` is :meth:`ResidualQuantizedVAE.forward` on ``x [R, N, d]`` with every loss
    per run (``[R]``). :meth:`write_back` copies each run's parameters and buffers into its
    member, so evaluation, codes and outputs stay the single-model code.

    Args:
        models: VAEs of one shape (layer sizes, geometry, curvature, reconstruction loss,
            quantizer kind and codebook sizes, dtype and device).
        generators: per run, the stream that stands in for torch's global generator while its
            member quantizer runs (:class:`~hrq.quantize.stacked.MemberQuantizers`); unused by stacked quantizers.
    """

    def __init__(self, models: Sequence[ResidualQuantizedVAE],
                 generators: Sequence[torch.Generator] | None = None) -> None:
        super().__init__()
        if not models:
            raise ValueError("need at least one model to stack")
        first = _shape(models[0])
        for i, model in enumerate(models[1:], 1):
            differ = [key for key, value in _shape(model).items() if value != first[key]]
            if differ:
                raise ValueError(f"stacked VAEs must share one shape: model {i} differs from model 0 in "
                                 f"{', '.join(differ)}")
        self.runs = len(models)
        self._members = tuple(models)  # a tuple: not registered, their parameters stay theirs
        self.ball = models[0].ball
        self.encoder = _stack_mlp([m.encoder for m in models])
        self.decoder = _stack_mlp([m.decoder for m in models])
        self.quantizer = stack_quantizers([m.quantizer for m in models], generators)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        """Every run's pass on its own batch ``x [R, N, d]``: reconstructions ``[R, N, d]``, codes
        ``[R, N, k]``, latents ``[R, N, h]`` and losses ``[R]``."""
        if x.ndim != 3 or x.shape[0] != self.runs:
            raise ValueError(f"expected x of shape [{self.runs}, N, d], got {tuple(x.shape)}")
        latent = self.encoder(self.ball.expmap0(x) if self.ball is not None else x)
        q = self.quantizer(latent)
        out = self.decoder(q.quantized)
        recon = self.ball.logmap0(out) if self.ball is not None else out
        recon_loss = self._members[0].reconstruction_loss(x, recon)  # the same for every member
        return VAEOutput(recon, q.codes, latent, recon_loss + q.loss, recon_loss, q.loss)

    def param_groups(self, lrs: Sequence[float]) -> list[dict]:
        """Optimizer parameter groups (:func:`~hrq.models.riemannian_optimizer`) that train run
        ``r`` at learning rate ``lrs[r]``, e.g. one cell's seeds at each of Tables 2-4's tokenizer
        learning rates in one stack: a stacked parameter's ``lr`` is a tensor ``[R, 1, ...]``
        along its run axis, a member quantizer's own parameter (:class:`MemberQuantizers`) gets
        its run's float. One group at ``lrs[0]`` when every run shares it. Parameters that are not
        trained (the balls' fixed curvatures) are left out."""
        if len(lrs) != self.runs:
            raise ValueError(f"need one learning rate per run: {self.runs} runs, {len(lrs)} learning rates")
        trained = [p for p in self.parameters() if p.requires_grad]  # not the balls' fixed curvatures
        if len(set(lrs)) == 1:
            return [{"params": trained, "lr": float(lrs[0])}]
        owner = {}
        if isinstance(self.quantizer, MemberQuantizers):
            owner = {id(p): run for run, q in enumerate(self.quantizer.members) for p in q.parameters()}
        groups = []
        for p in trained:
            if id(p) in owner:
                groups.append({"params": [p], "lr": float(lrs[owner[id(p)]])})
            else:
                per_run = torch.tensor(lrs, dtype=p.dtype, device=p.device)
                groups.append({"params": [p], "lr": per_run.view(-1, *[1] * (p.ndim - 1))})
        return groups

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy each run's layers, codebooks and usage averages into its member (member
        quantizers that do not stack are the members' own modules already)."""
        for layer in self.modules():
            if isinstance(layer, StackedLinear):
                layer.write_back()
        self.quantizer.write_back()
