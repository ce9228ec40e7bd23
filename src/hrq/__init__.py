"""hrq: Hyperbolic Residual Quantization (HRQ / HRQ-VAE) and related quantizers.

Subpackages mirror the pipeline stages; see README.md. The quantizers live in
:mod:`hrq.quantize`, hyperbolic layers in :mod:`hrq.nn`, autoencoders in :mod:`hrq.models`.
"""

__version__ = "0.1.0"
