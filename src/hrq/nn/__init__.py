"""Hyperbolic layers (Möbius linear, tangent-space activations) and an MLP builder."""

from hrq.nn.layers import HyperbolicActivation, MobiusLinear, mlp

__all__ = ["HyperbolicActivation", "MobiusLinear", "mlp"]
