"""DeepNet constants (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers", Table 1).

Shared by ``chainrule.normalization.deepnorm_constants`` (alpha scales the residual branch:
``x_{l+1} = LN(alpha * x_l + F(x_l))``) and ``chainrule.initializers.deepnorm`` (beta scales the
Xavier-initialized weights of the feed-forward, value and output projections).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

ARCHS = ("encoder", "decoder", "encoder-decoder")


class DeepNormConstants(NamedTuple):
    """alpha (residual scale) and beta (init gain) for each stack.

    For ``encoder`` or ``decoder`` architectures only the ``encoder_*`` or ``decoder_*`` pair is
    meaningful and the other pair repeats it.
    """

    encoder_alpha: float
    encoder_beta: float
    decoder_alpha: float
    decoder_beta: float

    @property
    def alpha(self) -> float:
        """The encoder's alpha (the only one for encoder-only or decoder-only stacks)."""
        return self.encoder_alpha

    @property
    def beta(self) -> float:
        """The encoder's beta (the only one for encoder-only or decoder-only stacks)."""
        return self.encoder_beta


def deepnorm_constants(
    num_layers: int, arch: str = "encoder", num_decoder_layers: int | None = None
) -> DeepNormConstants:
    """alpha and beta of DeepNorm for an N-layer encoder and/or M-layer decoder.

    * encoder-only (N layers): alpha = (2N)^(1/4), beta = (8N)^(-1/4)
    * decoder-only (M layers): alpha = (2M)^(1/4), beta = (8M)^(-1/4)
    * encoder-decoder (N encoder, M decoder layers):
      encoder alpha = 0.81 (N^4 M)^(1/16), beta = 0.87 (N^4 M)^(-1/16);
      decoder alpha = (3M)^(1/4), beta = (12M)^(-1/4)

    Args:
      num_layers: N, the number of (encoder, or decoder for ``arch="decoder"``) layers, >= 1.
      arch: ``"encoder"``, ``"decoder"`` or ``"encoder-decoder"``.
      num_decoder_layers: M for ``"encoder-decoder"`` (defaults to ``num_layers``).

    Returns:
      A :class:`DeepNormConstants`; ``.alpha``/``.beta`` give the encoder's pair.

    Raises:
      ValueError: for an unknown ``arch`` or a layer count below 1.

    Example:
      >>> round(deepnorm_constants(6).alpha, 4)
      1.8612
    """
    from chainrule._tree import check_choice

    check_choice(arch, ARCHS, "arch")
    m = num_layers if num_decoder_layers is None else num_decoder_layers
    for name, val in (("num_layers", num_layers), ("num_decoder_layers", m)):
        if not isinstance(val, int | np.integer) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be an integer >= 1, found {val!r}.")
    num_layers, m = int(num_layers), int(m)  # numpy ints: Python ints give Python floats
    if arch in ("encoder", "decoder"):
        a, b = (2 * num_layers) ** 0.25, (8 * num_layers) ** -0.25
        return DeepNormConstants(a, b, a, b)
    n4m = num_layers**4 * m
    return DeepNormConstants(
        0.81 * n4m ** (1 / 16), 0.87 * n4m ** (-1 / 16), (3 * m) ** 0.25, (12 * m) ** -0.25
    )
