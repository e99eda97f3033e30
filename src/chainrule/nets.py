"""Small pure-functional models for experiments: an MLP, a vanilla RNN, a transformer stack.

Parameters are plain pytrees (lists of dicts of arrays), so every chainrule transform, optax
optimizer and ``jax.tree`` function applies to them directly. ``*_init`` functions take a PRNG
key and any initializer with JAX's protocol ``init(key, shape, dtype) -> Array`` (from
``jax.nn.initializers`` or ``chainrule.initializers``); ``*_apply`` functions are pure and
jit-able. Configuration that is not an array (activation names, the transformer's wiring and
head count) is an argument of ``*_apply``, never a leaf of the parameter tree, so gradients of
the parameters are well defined.

Weights are stored ``(fan_in, fan_out)`` and applied as ``x @ w + b`` (the flax convention), so
``jax.nn.initializers`` compute fans correctly for them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from chainrule._tree import check_choice

__all__ = [
    "ACTIVATIONS",
    "WIRINGS",
    "get_activation",
    "mlp_init",
    "mlp_apply",
    "rnn_init",
    "rnn_apply",
    "transformer_init",
    "transformer_apply",
]

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]
Params = Any


def _linear(x: jax.Array) -> jax.Array:
    return x


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": _linear,
    "gelu": jax.nn.gelu,
}

#: Transformer residual/normalization wirings: Post-LN, Pre-LN and DeepNorm.
WIRINGS = ("post", "pre", "deep")


def get_activation(activation: str | Callable[[jax.Array], jax.Array]) -> Callable:
    """Resolve an activation name (a key of :data:`ACTIVATIONS`) or pass a callable through.

    Args:
      activation: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"linear"``, ``"gelu"`` or a callable.

    Returns:
      The elementwise function.

    Raises:
      ValueError: an unknown name (listing the valid ones and the nearest match).

    Example:
      >>> import jax.numpy as jnp
      >>> float(get_activation("relu")(jnp.array(-1.0)))
      0.0
    """
    if callable(activation):
        return activation
    check_choice(activation, tuple(ACTIVATIONS), "activation")
    return ACTIVATIONS[activation]


def _check_positive_ints(values: Sequence[Any], name: str, min_len: int = 1) -> None:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, found {values!r}.")
    if len(values) < min_len:
        raise ValueError(
            f"{name} needs at least {min_len} entries (input size, then one per layer), "
            f"found {list(values)!r}."
        )
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}[{i}] must be a positive int, found {v!r}.")


def _check_positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, found {value!r}.")


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------


def mlp_init(
    key: jax.Array,
    sizes: Sequence[int],
    init: Initializer | None = None,
    bias: Initializer | None = None,
    dtype: Any = jnp.float32,
) -> list[dict[str, jax.Array]]:
    """Parameters of an MLP with layer widths ``sizes`` (input first).

    Args:
      key: a PRNG key.
      sizes: ``[d_in, h_1, ..., d_out]``; ``len(sizes) - 1`` layers.
      init: weight initializer ``init(key, (fan_in, fan_out), dtype)``; default LeCun normal
        (``jax.nn.initializers.lecun_normal()``). Use ``he_normal()`` for ReLU nets.
      bias: bias initializer ``bias(key, (fan_out,), dtype)``; default zeros.
      dtype: parameter dtype.

    Returns:
      ``[{"w": (sizes[l], sizes[l+1]), "b": (sizes[l+1],)} for each layer]``.

    Raises:
      ValueError/TypeError: ``sizes`` with fewer than 2 entries or a non-positive entry.

    Example:
      >>> import jax
      >>> p = mlp_init(jax.random.key(0), [3, 4, 2])
      >>> [layer["w"].shape for layer in p]
      [(3, 4), (4, 2)]
    """
    _check_positive_ints(sizes, "sizes", min_len=2)
    init = jax.nn.initializers.lecun_normal() if init is None else init
    bias = jax.nn.initializers.zeros if bias is None else bias
    keys = jax.random.split(key, 2 * (len(sizes) - 1))
    return [
        {
            "w": init(keys[2 * i], (n_in, n_out), dtype),
            "b": bias(keys[2 * i + 1], (n_out,), dtype),
        }
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]


def _maybe_checkpoint(fn: Callable, checkpoint: bool | Callable) -> Callable:
    """Wrap ``fn`` in ``jax.checkpoint`` (with ``checkpoint`` as its policy if callable)."""
    if checkpoint is False or checkpoint is None:
        return fn
    if checkpoint is True:
        return jax.checkpoint(fn)
    return jax.checkpoint(fn, policy=checkpoint)


def mlp_apply(
    params: Sequence[dict[str, jax.Array]],
    x: jax.Array,
    activation: str | Callable = "relu",
    *,
    return_activations: bool = False,
    residual: bool = False,
    norm: Callable[[jax.Array], jax.Array] | None = None,
    final_activation: bool = False,
    checkpoint: bool | Callable = False,
) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    """Apply an MLP: ``h_{l+1} = act(h_l @ w_l + b_l)``, the last layer linear by default.

    Args:
      params: from :func:`mlp_init` (a list of ``{"w", "b"}``).
      x: input of shape ``(..., sizes[0])``.
      activation: a name in :data:`ACTIVATIONS` or a callable.
      return_activations: also return every layer's output ``[h_1, ..., h_L]`` (the
        per-layer activations that ``chainrule.diagnostics`` inspects).
      residual: hidden layers add their input, ``h_{l+1} = h_l + act(...)``, where the widths
        match (the first and last layer are plain when they change width).
      norm: a function applied to every hidden layer's output (after the residual add), e.g.
        a layer norm; None for none.
      final_activation: apply ``activation`` to the last layer as well.
      checkpoint: ``True`` wraps each layer in ``jax.checkpoint`` (reverse mode then stores
        only each layer's input and recomputes the rest); a callable is used as the checkpoint
        policy (e.g. ``jax.checkpoint_policies.dots_saveable``).

    Returns:
      The output, or ``(output, activations)`` with ``return_activations``.

    Raises:
      ValueError: an unknown activation name.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = mlp_init(jax.random.key(0), [3, 4, 2])
      >>> y, acts = mlp_apply(p, jnp.ones((5, 3)), "tanh", return_activations=True)
      >>> y.shape, [a.shape for a in acts]
      ((5, 2), [(5, 4), (5, 2)])
    """
    act = get_activation(activation)
    n = len(params)
    acts = []
    h = x
    for i, layer in enumerate(params):
        last = i == n - 1

        def step(h, layer, last=last):
            z = h @ layer["w"] + layer["b"]
            out = act(z) if (not last or final_activation) else z
            if residual and not last and out.shape == h.shape:
                out = h + out
            if norm is not None and not last:
                out = norm(out)
            return out

        h = _maybe_checkpoint(step, checkpoint)(h, layer)
        acts.append(h)
    return (h, acts) if return_activations else h


# --------------------------------------------------------------------------------------------
# Vanilla RNN
# --------------------------------------------------------------------------------------------


def rnn_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    w_hh_init: Initializer | None = None,
    w_xh_init: Initializer | None = None,
    dtype: Any = jnp.float32,
) -> dict[str, jax.Array]:
    """Parameters of an Elman RNN ``h_t = act(x_t @ w_xh + h_{t-1} @ w_hh + b)``.

    Args:
      key: a PRNG key.
      input_size: width of ``x_t``.
      hidden_size: width of ``h_t``.
      w_hh_init: recurrent-weight initializer; default orthogonal
        (``jax.nn.initializers.orthogonal()``), whose singular values are all 1 so the linear
        part of backprop through time neither shrinks nor grows.
      w_xh_init: input-weight initializer; default LeCun normal.
      dtype: parameter dtype.

    Returns:
      ``{"w_xh": (input_size, hidden_size), "w_hh": (hidden_size, hidden_size),
      "b": (hidden_size,)}``.

    Raises:
      ValueError: a non-positive size.

    Example:
      >>> import jax
      >>> p = rnn_init(jax.random.key(0), 3, 5)
      >>> p["w_hh"].shape
      (5, 5)
    """
    _check_positive_int(input_size, "input_size")
    _check_positive_int(hidden_size, "hidden_size")
    w_hh_init = jax.nn.initializers.orthogonal() if w_hh_init is None else w_hh_init
    w_xh_init = jax.nn.initializers.lecun_normal() if w_xh_init is None else w_xh_init
    k1, k2 = jax.random.split(key)
    return {
        "w_xh": w_xh_init(k1, (input_size, hidden_size), dtype),
        "w_hh": w_hh_init(k2, (hidden_size, hidden_size), dtype),
        "b": jnp.zeros((hidden_size,), dtype),
    }


def rnn_apply(
    params: dict[str, jax.Array],
    xs: jax.Array,
    h0: jax.Array | None = None,
    activation: str | Callable = "tanh",
) -> jax.Array:
    """Run the RNN over time (``lax.scan``) and return every hidden state.

    Args:
      params: from :func:`rnn_init`.
      xs: inputs, time first: ``(T, input_size)`` or ``(T, batch, input_size)``.
      h0: initial state ``(hidden_size,)`` / ``(batch, hidden_size)``; default zeros.
      activation: a name in :data:`ACTIVATIONS` or a callable.

    Returns:
      Hidden states ``(T, [batch,] hidden_size)``; ``hs[t]`` is ``h_{t+1}``.

    Raises:
      ValueError: an unknown activation, or ``xs`` whose last axis is not ``input_size``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = rnn_init(jax.random.key(0), 3, 5)
      >>> rnn_apply(p, jnp.ones((7, 2, 3))).shape
      (7, 2, 5)
    """
    act = get_activation(activation)
    d_in, d_h = params["w_xh"].shape
    if xs.ndim < 2 or xs.shape[-1] != d_in:
        raise ValueError(
            f"xs must have shape (T, [batch,] {d_in}) (time first, last axis = input_size of "
            f"params['w_xh']), found {xs.shape}."
        )
    # The state takes the promoted dtype of inputs and weights, so the scan carry keeps its type.
    dtype = jnp.result_type(xs, params["w_xh"], params["w_hh"])
    h0 = jnp.zeros((*xs.shape[1:-1], d_h), dtype) if h0 is None else jnp.asarray(h0, dtype)

    def step(h, x):
        h = act(x @ params["w_xh"] + h @ params["w_hh"] + params["b"])
        return h, h

    return jax.lax.scan(step, h0, xs)[1]


# --------------------------------------------------------------------------------------------
# Transformer block stack
# --------------------------------------------------------------------------------------------


def transformer_init(
    key: jax.Array,
    depth: int,
    d_model: int,
    n_heads: int,
    d_ff: int,
    wiring: str = "pre",
    init: Initializer | None = None,
    dtype: Any = jnp.float32,
) -> dict[str, Any]:
    """Parameters of a stack of ``depth`` encoder blocks (self-attention + feed-forward).

    With ``wiring="deep"`` the value, output and feed-forward weights are scaled by DeepNorm's
    beta = (8 depth)^(-1/4) (Wang et al. 2022), as ``chainrule.initializers.deepnorm`` does;
    query/key weights keep the plain initializer.

    Args:
      key: a PRNG key.
      depth: number of blocks.
      d_model: model width (divisible by ``n_heads``).
      n_heads: attention heads.
      d_ff: hidden width of the feed-forward sub-layer.
      wiring: ``"post"`` (Post-LN), ``"pre"`` (Pre-LN) or ``"deep"`` (DeepNorm).
      init: weight initializer; default Xavier (Glorot) normal.
      dtype: parameter dtype.

    Returns:
      ``{"layers": [{"attn": {"wq","wk","wv","wo"}, "ffn": {"w1","b1","w2","b2"},
      "ln1": {"scale","bias"}, "ln2": {...}}, ...], "ln_f": {"scale","bias"}}`` (``ln_f`` is
      the final norm Pre-LN needs; the other wirings ignore it).

    Raises:
      ValueError: unknown wiring, non-positive sizes, ``d_model`` not divisible by ``n_heads``.

    Example:
      >>> import jax
      >>> p = transformer_init(jax.random.key(0), 2, 8, 2, 16, "post")
      >>> len(p["layers"]), p["layers"][0]["attn"]["wq"].shape
      (2, (8, 8))
    """
    check_choice(wiring, WIRINGS, "wiring")
    for name, v in (("depth", depth), ("d_model", d_model), ("n_heads", n_heads), ("d_ff", d_ff)):
        _check_positive_int(v, name)
    if d_model % n_heads:
        raise ValueError(
            f"d_model={d_model} must be divisible by n_heads={n_heads} (head width = "
            f"d_model / n_heads)."
        )
    init = jax.nn.initializers.xavier_normal() if init is None else init
    if wiring == "deep":
        from chainrule._deepnorm import deepnorm_constants

        beta = deepnorm_constants(depth).beta
    else:
        beta = 1.0

    def ln():
        return {"scale": jnp.ones((d_model,), dtype), "bias": jnp.zeros((d_model,), dtype)}

    layers = []
    for k in jax.random.split(key, depth):
        ks = jax.random.split(k, 6)
        layers.append(
            {
                "attn": {
                    "wq": init(ks[0], (d_model, d_model), dtype),
                    "wk": init(ks[1], (d_model, d_model), dtype),
                    "wv": beta * init(ks[2], (d_model, d_model), dtype),
                    "wo": beta * init(ks[3], (d_model, d_model), dtype),
                },
                "ffn": {
                    "w1": beta * init(ks[4], (d_model, d_ff), dtype),
                    "b1": jnp.zeros((d_ff,), dtype),
                    "w2": beta * init(ks[5], (d_ff, d_model), dtype),
                    "b2": jnp.zeros((d_model,), dtype),
                },
                "ln1": ln(),
                "ln2": ln(),
            }
        )
    return {"layers": layers, "ln_f": ln()}


def _attention(p: dict[str, jax.Array], x: jax.Array, n_heads: int, causal: bool) -> jax.Array:
    *lead, t, d = x.shape
    hd = d // n_heads

    def heads(y):
        return y.reshape(*lead, t, n_heads, hd)

    q, k, v = heads(x @ p["wq"]), heads(x @ p["wk"]), heads(x @ p["wv"])
    mask = jnp.tril(jnp.ones((t, t), bool)) if causal else None
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return out.reshape(*lead, t, d) @ p["wo"]


def _ffn(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def transformer_apply(
    params: dict[str, Any],
    x: jax.Array,
    wiring: str = "pre",
    n_heads: int = 1,
    *,
    causal: bool = False,
    return_activations: bool = False,
) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    """Apply the block stack with the given residual/normalization wiring.

    Per sub-layer ``F`` (attention, then feed-forward), with ``LN`` the layer norm of
    ``chainrule.normalization`` (eps 1e-5) and its ``post_norm``/``pre_norm``/``deep_norm``
    wiring:

    * ``"post"`` (Post-LN, the original transformer): ``x = LN(x + F(x))``.
    * ``"pre"`` (Pre-LN): ``x = x + F(LN(x))``, and one final ``LN`` after the stack.
    * ``"deep"`` (DeepNorm): ``x = LN(alpha x + F(x))``, alpha = (2 depth)^(1/4).

    Args:
      params: from :func:`transformer_init` (with the same wiring for DeepNorm's beta).
      x: ``(..., seq, d_model)``.
      wiring: ``"post"``, ``"pre"`` or ``"deep"``.
      n_heads: attention heads (as at init).
      causal: mask attention to earlier positions.
      return_activations: also return each block's output (the residual stream).

    Returns:
      The output ``(..., seq, d_model)``, or ``(output, per-block outputs)``.

    Raises:
      ValueError: unknown wiring, or ``d_model`` not divisible by ``n_heads``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = transformer_init(jax.random.key(0), 2, 8, 2, 16, "deep")
      >>> transformer_apply(p, jnp.ones((3, 8)), "deep", n_heads=2).shape
      (3, 8)
    """
    check_choice(wiring, WIRINGS, "wiring")
    d = x.shape[-1]
    if d % n_heads:
        raise ValueError(f"d_model={d} (x.shape[-1]) must be divisible by n_heads={n_heads}.")
    from chainrule.normalization import deep_norm, layer_norm, post_norm, pre_norm

    layers = params["layers"]
    if wiring == "deep":
        from chainrule._deepnorm import deepnorm_constants

        alpha = deepnorm_constants(len(layers)).alpha
    acts = []
    for layer in layers:
        subs = (
            (lambda y, layer=layer: _attention(layer["attn"], y, n_heads, causal), layer["ln1"]),
            (lambda y, layer=layer: _ffn(layer["ffn"], y), layer["ln2"]),
        )
        for f, ln in subs:
            norm = functools.partial(layer_norm, params=ln)
            if wiring == "pre":
                x = pre_norm(x, f, norm)
            elif wiring == "post":
                x = post_norm(x, f, norm)
            else:
                x = deep_norm(x, f, norm, alpha)
        acts.append(x)
    if wiring == "pre":
        x = layer_norm(x, params["ln_f"])
    return (x, acts) if return_activations else x
