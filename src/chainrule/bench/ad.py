"""The ``ad`` suite: chainrule's transforms against the raw JAX compositions they wrap.

Every chainrule transform is timed against ``jax.jit`` of the same ``jax.*`` composition,
alternating the two (and the forward pass) call by call in one run, so that their ratio
measures what the wrapper adds (target: <= 1.03). Each is also stated as a multiple of the
forward pass measured in the same alternation (an HVP by forward-over-reverse is ~9 matmuls per
layer against the forward's 1, so ~8-9x is its floor; target: within 10x). Where torch is
installed, torch.func's ``jvp(grad(f))`` and ``torch.autograd.functional.hvp`` run on the same
model, the same data and the same float32 matmul precision (on a GPU, TF32 on both sides: JAX's
default, and torch told so).

Model: the anchor's MLP loss ``mean((tanh(...tanh(x W_1)...) W_L - y)^2)`` over a list of
``L`` square ``W x W`` weights, batch ``B``, float32. Sizes: ``quick`` (tiny, for CI), ``cpu``
(medium: ~1-10 ms a call on a 2-core CPU) and ``gpu`` (L=8, W=4096, B=2048, the anchor's);
``auto`` picks ``gpu`` on any accelerator backend.

Row fields: ``suite, name, impl, size, ms`` (median), ``min_ms``, ``first_call_ms`` (the first
call, tracing and compilation included: what a user waits for once), ``ratio`` (``ms`` over the
median of the row named in ``vs``, measured in the same alternation), ``vs``, ``x_fwd``
(``ms`` over the forward pass of the same alternation), ``target``/``meets_target`` where the
issue sets one, and ``note``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import chainrule as cr
from chainrule import _env
from chainrule._rules import hvp_rule
from chainrule._tree import check_choice
from chainrule.bench.timing import cold_call_ms, matmul_precision, resolve_reps, time_alternating

__all__ = ["SIZES", "RATIO_TARGET", "HVP_X_FWD_TARGET", "suite"]

RATIO_TARGET = 1.03  # chainrule / raw JAX
HVP_X_FWD_TARGET = 10.0  # forward-over-reverse HVP / forward pass


@dataclasses.dataclass(frozen=True)
class _Sizes:
    mlps: tuple[tuple[str, int, int, int], ...]  # (label, L, W, B)
    jacobians: tuple[tuple[str, int, int], ...]  # (label, n, m) for f: R^n -> R^m
    hessian_n: int
    hvp_batch: int  # K directions for hvp_batched
    memory: tuple[int, int]  # (steps, n) of the fresh-closure memory loop: n x n batches


SIZES: dict[str, _Sizes] = {
    "quick": _Sizes(
        mlps=(("L2-W16-B8", 2, 16, 8),),
        jacobians=(("tall", 4, 32), ("wide", 32, 4), ("square", 16, 16)),
        hessian_n=8,
        hvp_batch=2,
        memory=(20, 64),
    ),
    # 2-core CPU, medium sizes (~0.5-2 ms forward, ~5-30 ms HVP): large enough that the
    # ratio measures the computation, not Python dispatch (~10-15 us a call on this machine).
    "cpu": _Sizes(
        mlps=(("L3-W256-B128", 3, 256, 128), ("L4-W256-B256", 4, 256, 256)),
        jacobians=(("tall", 64, 4096), ("wide", 4096, 64), ("square", 512, 512)),
        hessian_n=256,
        hvp_batch=4,
        memory=(1000, 1024),
    ),
    # The anchor's model (../shared/anchors/anchor_ad.py) and Jacobian shapes.
    "gpu": _Sizes(
        mlps=(("L4-W1024-B512", 4, 1024, 512), ("L8-W4096-B2048", 8, 4096, 2048)),
        jacobians=(("tall", 16, 4096), ("wide", 4096, 16), ("square", 1024, 1024)),
        hessian_n=1024,
        hvp_batch=4,
        memory=(1000, 1024),
    ),
}
SIZE_CHOICES = ("auto", "cpu", "gpu", "quick")
_DTYPE = jnp.float32


def _pick_size(size: str | None, quick: bool) -> str:
    if quick:
        return "quick"
    size = size or _env.bench_size()
    check_choice(size, SIZE_CHOICES, "ad benchmark size")
    if size == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "gpu"
    return size


# --------------------------------------------------------------------------------------------
# Measuring a group of contenders and turning it into rows
# --------------------------------------------------------------------------------------------


def _measure(fns: dict[str, Callable[[], Any]], reps: int, warmup: int) -> dict[str, dict]:
    """First call of each (compile included), then all of them alternated call by call."""
    first = {name: cold_call_ms(fn) for name, fn in fns.items()}
    stats = time_alternating(fns, warmup=warmup, reps=reps)
    for name in fns:
        stats[name]["first_call_ms"] = first[name]
    return stats


def _row(name: str, impl: str, size: str, st: dict, **extra: Any) -> dict[str, Any]:
    row = {
        "suite": "ad",
        "name": name,
        "impl": impl,
        "size": size,
        "ms": st["median_ms"],
        "min_ms": st["min_ms"],
        "first_call_ms": st["first_call_ms"],
        "reps": len(st["times_ms"]),
    }
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def _pair_rows(
    name: str,
    size: str,
    stats: dict[str, dict],
    cr_key: str = "chainrule",
    raw_key: str = "jax",
    fwd_key: str | None = "forward",
    raw_impl: str = "jax",
    target: bool = True,
    x_fwd_target: float | None = None,
    note: str | None = None,
) -> list[dict]:
    """A chainrule row (ratio over raw JAX) and the raw row, both as multiples of the forward."""
    fwd = stats[fwd_key]["median_ms"] if fwd_key else None
    c, r = stats[cr_key], stats[raw_key]
    ratio = c["median_ms"] / r["median_ms"]
    # The median of per-pair ratios is less sensitive to drift than the ratio of medians.
    paired = float(np.median(np.asarray(c["times_ms"]) / np.asarray(r["times_ms"])))
    cr_extra: dict[str, Any] = {"ratio": ratio, "ratio_paired": paired, "vs": raw_impl}
    if fwd:
        cr_extra["x_fwd"] = c["median_ms"] / fwd
    targets = []
    met = []
    if target:
        targets.append(f"ratio<={RATIO_TARGET}")
        met.append(ratio <= RATIO_TARGET)
    if x_fwd_target is not None and fwd:
        targets.append(f"x_fwd<={x_fwd_target:g}")
        met.append(cr_extra["x_fwd"] <= x_fwd_target)
    if targets:
        cr_extra["target"] = " and ".join(targets)
        cr_extra["meets_target"] = all(met)
    rows = [_row(name, "chainrule", size, c, note=note, **cr_extra)]
    raw_extra = {"x_fwd": r["median_ms"] / fwd} if fwd else {}
    rows.append(_row(name, raw_impl, size, r, **raw_extra))
    return rows


# --------------------------------------------------------------------------------------------
# The MLP loss and its transforms
# --------------------------------------------------------------------------------------------


def _mlp(num_layers: int, width: int, batch: int, seed: int = 0):
    ks = jax.random.split(jax.random.PRNGKey(seed), num_layers + 3)
    scale = (2.0 / width) ** 0.5
    params = [jax.random.normal(ks[i], (width, width), _DTYPE) * scale for i in range(num_layers)]
    x = jax.random.normal(ks[-3], (batch, width), _DTYPE)
    y = jax.random.normal(ks[-2], (batch, width), _DTYPE)
    v = [jax.random.normal(k, (width, width), _DTYPE) for k in jax.random.split(ks[-1], num_layers)]
    params, x, y, v = jax.device_put((params, x, y, v))

    # The data are closed over, as in the anchor, by the chainrule and the raw JAX sides alike:
    # both see the same function.
    def loss(p):
        h = x
        for w in p[:-1]:
            h = jnp.tanh(h @ w)
        return jnp.mean((h @ p[-1] - y) ** 2)

    return loss, params, v, (x, y)


def _raw_hvp(f: Callable, mode: str) -> Callable:
    rule = hvp_rule(mode)  # the one rule table chainrule's hvp uses
    return lambda x, v: rule(f, x, v)


def _mlp_rows(label: str, dims: tuple[int, int, int], k_batch: int, reps: int, warmup: int):
    num_layers, width, batch = dims
    loss, p, v, data = _mlp(num_layers, width, batch)
    size = f"{label} f32"
    fwd = jax.jit(loss)
    ct = jax.device_put(jnp.ones((), _DTYPE))
    rows: list[dict] = []

    def group(name: str, cr_fn, raw_fn, **kw) -> None:
        stats = _measure(
            {"chainrule": cr_fn, "jax": raw_fn, "forward": lambda: fwd(p)}, reps, warmup
        )
        if not rows:
            rows.append(_row("forward", "jax", size, stats["forward"], x_fwd=1.0))
        rows.extend(_pair_rows(name, size, stats, **kw))

    # jvp
    raw_jvp = jax.jit(lambda p, t: jax.jvp(loss, (p,), (t,)))
    cr_jvp = jax.jit(lambda p, t: cr.jvp(loss, (p,), (t,)))
    group("jvp", lambda: cr_jvp(p, v), lambda: raw_jvp(p, v))

    # vjp: the forward pass returning the pullback, then the pullback applied, both sides.
    raw_vjp = jax.jit(lambda p: jax.vjp(loss, p))
    raw_apply = jax.jit(lambda fn, t: fn(t))

    cr_vjp_j = jax.jit(lambda p: cr.vjp(loss, p))

    def cr_vjp():
        _, pullback = cr_vjp_j(p)
        return raw_apply(pullback, ct)

    def raw_vjp_apply():
        _, pullback = raw_vjp(p)
        return raw_apply(pullback, ct)

    group("vjp (fwd+pullback)", cr_vjp, raw_vjp_apply)

    cr_grad, raw_grad = jax.jit(cr.grad(loss)), jax.jit(jax.grad(loss))
    group("grad", lambda: cr_grad(p), lambda: raw_grad(p))
    cr_vg, raw_vg = jax.jit(cr.value_and_grad(loss)), jax.jit(jax.value_and_grad(loss))
    group("value_and_grad", lambda: cr_vg(p), lambda: raw_vg(p))

    # linearize, then one JVP through the linearization, both sides.
    raw_lin = jax.jit(lambda p: jax.linearize(loss, p))

    cr_lin_j = jax.jit(lambda p: cr.linearize(loss, p))

    def cr_lin():
        _, f_jvp = cr_lin_j(p)
        return raw_apply(f_jvp, v)

    def raw_lin_apply():
        _, f_jvp = raw_lin(p)
        return raw_apply(f_jvp, v)

    group("linearize+apply", cr_lin, raw_lin_apply)

    for mode in cr.HVP_MODES:
        raw = jax.jit(_raw_hvp(loss, mode))
        ours = jax.jit(lambda p, v, mode=mode: cr.hvp(loss, p, v, mode=mode))
        group(
            f"hvp {mode}",
            lambda ours=ours: ours(p, v),
            lambda raw=raw: raw(p, v),
            x_fwd_target=HVP_X_FWD_TARGET if mode == "fwd-over-rev" else None,
        )

    vs = jax.device_put(
        jax.tree.map(lambda w: jnp.stack([w * (1.0 + 0.1 * k) for k in range(k_batch)]), v)
    )
    one = _raw_hvp(loss, "fwd-over-rev")
    raw_batched = jax.jit(lambda p, vs: jax.vmap(lambda t: one(p, t))(vs))
    cr_batched = jax.jit(lambda p, vs: cr.hvp_batched(loss, p, vs))
    group(
        f"hvp_batched K={k_batch}",
        lambda: cr_batched(p, vs),
        lambda: raw_batched(p, vs),
        note=f"x_fwd is for K={k_batch} HVPs",
    )
    rows.extend(_torch_rows(label, loss, p, v, data, reps, warmup))
    return rows


# --------------------------------------------------------------------------------------------
# torch.func on the same model
# --------------------------------------------------------------------------------------------


def torch_precision() -> str | None:
    """How the torch comparison sets float32 matmuls, or None where torch is not installed.

    On a GPU, JAX multiplies float32 matrices in TF32 by default; torch does not unless told, so
    the comparison tells it (``allow_tf32=True``, ``set_float32_matmul_precision("high")``)
    unless JAX was asked for full float32 (``jax_default_matmul_precision``), in which case
    torch is set to ``"highest"``. On the CPU both compute in full float32.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    if jax.default_backend() != "gpu":
        return "float32 (CPU: full float32 matmuls, as JAX)"
    if _jax_wants_full_f32():
        return 'float32 highest (set_float32_matmul_precision("highest"), as JAX is set)'
    return (
        "TF32, to match JAX's default: torch.backends.cuda.matmul.allow_tf32=True, "
        'set_float32_matmul_precision("high")'
    )


def _jax_wants_full_f32() -> bool:
    prec = str(matmul_precision() or "default").lower()
    return prec in ("highest", "float32", "precision.highest")


def _torch_rows(label, loss, p, v, data, reps, warmup) -> list[dict]:
    try:
        import torch
        from torch.func import grad as tgrad
        from torch.func import jvp as tjvp
    except Exception as e:  # not installed, or broken: the rest of the suite still runs
        return [] if isinstance(e, ModuleNotFoundError) else [_torch_failed(label, e)]
    cuda = jax.default_backend() == "gpu" and torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    if cuda:
        full = _jax_wants_full_f32()
        torch.backends.cuda.matmul.allow_tf32 = not full
        torch.set_float32_matmul_precision("highest" if full else "high")
    # The same numbers as the JAX side: weights, data and direction copied over.
    x, y = data
    to_t = lambda a: torch.from_numpy(np.array(a)).to(dev)  # noqa: E731
    tp, tv = [to_t(w) for w in p], [to_t(w) for w in v]
    tx, ty = to_t(x), to_t(y)

    def tloss(ps):
        h = tx
        for w in ps[:-1]:
            h = torch.tanh(h @ w)
        return torch.mean((h @ ps[-1] - ty) ** 2)

    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def synced(fn):
        def call():
            out = fn()
            sync()
            return out

        return call

    fns = {
        "chainrule": lambda: cr.hvp(loss, p, v),
        "torch.func jvp(grad)": synced(lambda: tjvp(tgrad(tloss), (tp,), (tv,))[1]),
        "torch.autograd.functional.hvp": synced(
            lambda: torch.autograd.functional.hvp(
                lambda *ps: tloss(list(ps)), tuple(tp), tuple(tv)
            )[1]
        ),
        "torch forward": synced(lambda: tloss(tp)),
    }
    # Agreement check first: a fast wrong answer is no comparison.
    ref = np.concatenate([np.ravel(np.asarray(a)) for a in cr.hvp(loss, p, v)])
    got = np.concatenate([t.detach().cpu().numpy().ravel() for t in fns["torch.func jvp(grad)"]()])
    rel = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
    stats = _measure(fns, reps, warmup)
    size = f"{label} f32"
    c = stats["chainrule"]["median_ms"]
    tf = stats["torch forward"]["median_ms"]
    rows = [_row("forward", "torch", size, stats["torch forward"], x_fwd=1.0, device=dev)]
    for name, note in (
        ("torch.func jvp(grad)", f"relative difference to chainrule's HVP {rel:.1e}"),
        ("torch.autograd.functional.hvp", None),
    ):
        st = stats[name]
        rows.append(
            _row(
                "hvp fwd-over-rev",
                name,
                size,
                st,
                ratio=st["median_ms"] / c,
                vs="chainrule",
                x_fwd=st["median_ms"] / tf,
                target="ratio>1 (chainrule faster)",
                meets_target=st["median_ms"] > c,
                note=(note + "; " if note else "") + f"chainrule {c:.3f} ms in this alternation",
                device=dev,
            )
        )
    return rows


def _torch_failed(label: str, e: Exception) -> dict:
    return {
        "suite": "ad",
        "name": "hvp fwd-over-rev",
        "impl": "torch",
        "size": f"{label} f32",
        "error": f"{type(e).__name__}: {e}",
    }


# --------------------------------------------------------------------------------------------
# Jacobians and the Hessian
# --------------------------------------------------------------------------------------------


def _jacobian_rows(label: str, n: int, m: int, reps: int, warmup: int) -> list[dict]:
    ka, kz = jax.random.split(jax.random.PRNGKey(1))
    a = jax.device_put(jax.random.normal(ka, (m, n), _DTYPE) / n**0.5)
    z = jax.device_put(jax.random.normal(kz, (n,), _DTYPE))

    def g(z):
        return jnp.tanh(a @ jnp.tanh(z))

    chosen = "fwd" if n < m else "rev"
    chunk = max(1, min(n, m) // 4)
    fns = {
        "forward": jax.jit(g),
        "cr fwd": jax.jit(cr.jacobian(g, mode="fwd")),
        "jax.jacfwd": jax.jit(jax.jacfwd(g)),
        "cr rev": jax.jit(cr.jacobian(g, mode="rev")),
        "jax.jacrev": jax.jit(jax.jacrev(g)),
        "cr auto": jax.jit(cr.jacobian(g, mode="auto")),
        "cr chunked": jax.jit(cr.jacobian(g, mode="auto", chunk_size=chunk)),
    }
    calls = {k: (lambda f=f: f(z)) for k, f in fns.items()}
    size = f"{label} n={n} m={m}"
    raw_best = "jax.jacfwd" if chosen == "fwd" else "jax.jacrev"
    raw_other = "jax.jacrev" if chosen == "fwd" else "jax.jacfwd"
    # Three alternations (each with the forward), so that the wrong mode's heavy calls (up to
    # ~200x the right one's) do not sit between the cheap ones being compared.
    per_mode = {
        mode: _measure({k: calls[k] for k in ("forward", f"cr {mode}", raw)}, reps, warmup)
        for mode, raw in (("fwd", "jax.jacfwd"), ("rev", "jax.jacrev"))
    }
    best = _measure(
        {k: calls[k] for k in ("forward", "cr auto", "cr chunked", raw_best)}, reps, warmup
    )
    fwd_stats = per_mode["fwd"]["forward"]
    other = "rev" if chosen == "fwd" else "fwd"
    wrong = per_mode[other][raw_other]["median_ms"] / per_mode[chosen][raw_best]["median_ms"]
    rows = [_row("jacobian: f forward", "jax", size, fwd_stats, x_fwd=1.0)]
    for mode, raw in (("fwd", "jax.jacfwd"), ("rev", "jax.jacrev")):
        rows.extend(
            _pair_rows(
                f"jacobian {mode}",
                size,
                per_mode[mode],
                cr_key=f"cr {mode}",
                raw_key=raw,
                raw_impl=raw,
            )
        )
    rows.extend(
        _pair_rows(
            f"jacobian auto (chose {chosen})",
            size,
            best,
            cr_key="cr auto",
            raw_key=raw_best,
            raw_impl=raw_best,
            note=f"the other mode ({raw_other}) is {wrong:.2f}x the chosen one",
        )[:1]
    )
    rows.extend(
        _pair_rows(
            f"jacobian chunked ({chosen}, chunk={chunk})",
            size,
            best,
            cr_key="cr chunked",
            raw_key=raw_best,
            raw_impl=raw_best,
            target=False,
            note="bounded memory (lax.map over chunks) vs all at once: a different computation",
        )[:1]
    )
    return rows


def _hessian_rows(n: int, reps: int, warmup: int) -> list[dict]:
    ka, kz = jax.random.split(jax.random.PRNGKey(2))
    a = jax.device_put(jax.random.normal(ka, (n, n), _DTYPE) / n**0.5)
    z = jax.device_put(jax.random.normal(kz, (n,), _DTYPE))

    def f(z):
        return jnp.sum(jnp.tanh(a @ jnp.tanh(z)) ** 2)

    chunk = max(1, n // 4)
    cr_h, cr_hc, raw_h, fwd = (
        jax.jit(cr.hessian(f)),
        jax.jit(cr.hessian(f, chunk_size=chunk)),
        jax.jit(jax.hessian(f)),
        jax.jit(f),
    )
    fns = {
        "forward": lambda: fwd(z),
        "chainrule": lambda: cr_h(z),
        "jax": lambda: raw_h(z),
        "chunked": lambda: cr_hc(z),
    }
    stats = _measure(fns, reps, warmup)
    size = f"n={n} f32"
    rows = _pair_rows("hessian", size, stats, raw_impl="jax.hessian")
    rows.extend(
        _pair_rows(
            f"hessian chunked (chunk={chunk})",
            size,
            stats,
            cr_key="chunked",
            raw_impl="jax.hessian",
            target=False,
            note="bounded memory vs all at once: a different computation",
        )[:1]
    )
    return rows


# --------------------------------------------------------------------------------------------
# Eager use: a fresh closure per call, a function reused, and the memory of a long loop
# --------------------------------------------------------------------------------------------

EAGER_RATIO_TARGET = 1.2  # chainrule eager / JAX's own eager transform, per call
MEMORY_RATIO_TARGET = 1.2  # RSS growth of a fresh-closure loop: chainrule / JAX


def _eager_pairs(loss: Callable, p: Any, v: Any) -> dict[str, tuple[Callable, Callable]]:
    """For each transform, (chainrule, JAX eager) as functions of the loss and the point."""
    ct = jnp.ones((), _DTYPE)
    return {
        "grad": (lambda f: cr.grad(f)(p), lambda f: jax.grad(f)(p)),
        "value_and_grad": (
            lambda f: cr.value_and_grad(f)(p),
            lambda f: jax.value_and_grad(f)(p),
        ),
        "jvp": (lambda f: cr.jvp(f, (p,), (v,)), lambda f: jax.jvp(f, (p,), (v,))),
        "vjp (fwd+pullback)": (
            lambda f: cr.vjp(f, p)[1](ct),
            lambda f: jax.vjp(f, p)[1](ct),
        ),
        "linearize+apply": (
            lambda f: cr.linearize(f, p)[1](v),
            lambda f: jax.linearize(f, p)[1](v),
        ),
        **{
            f"hvp {m}": (
                lambda f, m=m: cr.hvp(f, p, v, mode=m),
                lambda f, m=m: hvp_rule(m)(f, p, v),
            )
            for m in cr.HVP_MODES
        },
        "jacobian rev": (
            lambda f: cr.jacobian(lambda q: f(q)[None], mode="rev")(p),
            lambda f: jax.jacrev(lambda q: f(q)[None])(p),
        ),
        "hessian (last layer)": (
            lambda f: cr.hessian(lambda w: f([*p[:-1], w]))(p[-1][:, :2]),
            lambda f: jax.hessian(lambda w: f([*p[:-1], w]))(p[-1][:, :2]),
        ),
    }


def _eager_rows(label: str, dims: tuple[int, int, int], reps: int, warmup: int) -> list[dict]:
    """Rows (a) and (b) of issue 15: chainrule called eagerly against JAX's eager transforms.

    (a) ``cr.grad(lambda p: loss(p, x))(params)`` with a new batch ``x`` and so a new closure at
    every call, the README's idiom; (b) one function reused. Both sides trace the function at
    every call (that is what keeps them fresh); chainrule then runs a cached executable where
    JAX dispatches op by op.
    """
    num_layers, width, batch = dims
    loss_of_p, p, v, _ = _mlp(num_layers, width, batch)
    del loss_of_p
    ks = jax.random.split(jax.random.PRNGKey(7), 8)
    batches = jax.device_put([jax.random.normal(k, (batch, width), _DTYPE) for k in ks])
    y = jax.device_put(jax.random.normal(ks[0], (batch, width), _DTYPE))
    p = [w / 4 for w in p]  # a small last layer keeps the hessian row's slice meaningful

    def loss(q, x):
        h = x
        for w in q[:-1]:
            h = jnp.tanh(h @ w)
        return jnp.mean((h @ q[-1] - y[:, : q[-1].shape[1]]) ** 2)

    size = f"{label} f32"
    rows: list[dict] = []
    counter = iter(range(10**9))
    for name, (ours, theirs) in _eager_pairs(lambda q: loss(q, batches[0]), p, v).items():

        def fresh(run, name=name):
            x = batches[next(counter) % len(batches)]
            return run(lambda q: loss(q, x))

        reused = lambda q: loss(q, batches[0])  # noqa: E731
        fns = {
            "chainrule fresh": lambda ours=ours: fresh(ours),
            "jax fresh": lambda theirs=theirs: fresh(theirs),
            "chainrule reused": lambda ours=ours: ours(reused),
            "jax reused": lambda theirs=theirs: theirs(reused),
        }
        stats = _measure(fns, reps, warmup)
        for kind, what in (("fresh", "a fresh closure per call"), ("reused", "one function")):
            c, r = stats[f"chainrule {kind}"], stats[f"jax {kind}"]
            ratio = c["median_ms"] / r["median_ms"]
            rows.append(
                _row(
                    f"eager {kind}: {name}",
                    "chainrule",
                    size,
                    c,
                    ratio=ratio,
                    vs="jax eager",
                    target=f"ratio<={EAGER_RATIO_TARGET}",
                    meets_target=ratio <= EAGER_RATIO_TARGET,
                    note=f"{what}; both sides eager (no user jit)",
                )
            )
            rows.append(_row(f"eager {kind}: {name}", "jax eager", size, r))
    return rows


_MEMORY_SCRIPT = r"""
import gc, json, sys
import jax, jax.numpy as jnp
import chainrule as cr
side, steps, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
w = jnp.ones((n,)) / n ** 0.5
def loss(w, x):
    return jnp.mean(jnp.tanh(x @ w) ** 2)
grad = cr.grad if side == "chainrule" else jax.grad
key = jax.random.PRNGKey(0)
def step(i):
    x = jax.random.normal(jax.random.fold_in(key, i), (n, n))  # 4 MB at n = 1024
    return grad(lambda w: loss(w, x))(w)
for i in range(20):
    jax.block_until_ready(step(i))
gc.collect()
start = rss()
for i in range(steps):
    jax.block_until_ready(step(i))
gc.collect()
print(json.dumps({"start": start, "end": rss()}))
"""


def _memory_rows(steps: int, n: int) -> list[dict]:
    """Row (d): RSS growth over a fresh-closure loop, each side in its own process."""
    import json
    import subprocess
    import sys

    out = {}
    for side in ("chainrule", "jax"):
        proc = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, side, str(steps), str(n)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            return [{"suite": "ad", "name": "memory", "impl": side, "error": proc.stderr[-500:]}]
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = {k: (d["end"] - d["start"]) / 2**20 for k, d in out.items()}
    end = {k: d["end"] / 2**20 for k, d in out.items()}
    batch_mb = n * n * 4 / 2**20
    # The process's memory at the end of the loop, each side in a fresh process importing the
    # same modules: what a user's job needs. The growth after warm-up is in the note (a few
    # batches either way are the allocator keeping freed blocks, not a leak: it does not grow
    # with the number of steps).
    ratio = end["chainrule"] / end["jax"]
    size = f"{steps} steps, {batch_mb:.0f} MB batches"
    note = (
        f"RSS at the end: chainrule {end['chainrule']:.0f} MB, jax {end['jax']:.0f} MB; growth "
        f"after a 20-step warm-up: chainrule {mb['chainrule']:.1f} MB, jax {mb['jax']:.1f} MB"
    )
    return [
        {
            "suite": "ad",
            "name": "memory: fresh closure loop (grad)",
            "impl": "chainrule",
            "size": size,
            "growth_mb": mb["chainrule"],
            "rss_mb": end["chainrule"],
            "ratio": ratio,
            "vs": "jax eager",
            "target": f"ratio<={MEMORY_RATIO_TARGET}",
            "meets_target": ratio <= MEMORY_RATIO_TARGET,
            "note": note,
        },
        {
            "suite": "ad",
            "name": "memory: fresh closure loop (grad)",
            "impl": "jax eager",
            "size": size,
            "growth_mb": mb["jax"],
            "rss_mb": end["jax"],
        },
    ]


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------


def suite(quick: bool = False, reps: int | None = None, size: str | None = None) -> list[dict]:
    """Run the ``ad`` suite; one dict per row (see the module docstring for the fields).

    Args:
      quick: tiny sizes and 3 repetitions (a smoke test of the harness, not a measurement).
      reps: timed repetitions per contender (default: the run's, 20; 3 when ``quick``).
      size: ``"auto"`` (GPU sizes on an accelerator, CPU sizes otherwise), ``"cpu"``,
        ``"gpu"`` or ``"quick"``; default from ``$CHAINRULE_BENCH_SIZE``, else ``"auto"``.

    Returns:
      The rows, in the order measured.

    Raises:
      ValueError: an unknown ``size`` (listing the valid ones).
    """
    which = _pick_size(size, quick)
    sizes = SIZES[which]
    reps = resolve_reps(reps) if reps is not None or not quick else 3
    warmup = 1 if which == "quick" else 3
    rows: list[dict] = []
    for label, num_layers, width, batch in sizes.mlps:
        rows.extend(_mlp_rows(label, (num_layers, width, batch), sizes.hvp_batch, reps, warmup))
    for label, n, m in sizes.jacobians:
        rows.extend(_jacobian_rows(label, n, m, reps, warmup))
    rows.extend(_hessian_rows(sizes.hessian_n, reps, warmup))
    from chainrule.bench.chain import chain_rows  # issue 20: chain_jacobian plans vs auto

    rows.extend(chain_rows(which, reps, warmup))
    label, num_layers, width, batch = sizes.mlps[0]
    rows.extend(_eager_rows(label, (num_layers, width, batch), reps, warmup))
    rows.extend(_memory_rows(*sizes.memory))
    for row in rows:
        row.setdefault("size_preset", which)
    return rows


def eager_suite(quick: bool = False, reps: int | None = None, size: str | None = None):
    """Only issue 15's eager rows (a fresh closure per call, a function reused) and the memory
    row of the ``ad`` suite, for a quick look without the rest (same arguments as ``suite``)."""
    which = _pick_size(size, quick)
    sizes = SIZES[which]
    reps = resolve_reps(reps) if reps is not None or not quick else 3
    warmup = 1 if which == "quick" else 3
    label, num_layers, width, batch = sizes.mlps[0]
    rows = _eager_rows(label, (num_layers, width, batch), reps, warmup)
    rows.extend(_memory_rows(*sizes.memory))
    for row in rows:
        row.setdefault("size_preset", which)
    return rows


if __name__ == "__main__":  # python -m chainrule.bench.ad [--quick] [--json F] [--md F]
    import argparse
    import sys
    from pathlib import Path

    from chainrule.bench.cli import build_header
    from chainrule.bench.report import format_markdown, format_table, format_targets, write_json

    parser = argparse.ArgumentParser(description="the ad suite's eager and memory rows alone")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--md")
    args = parser.parse_args()
    header = build_header(
        args.quick, None, None, ["python", "-m", "chainrule.bench.ad", *sys.argv[1:]]
    )
    rows = eager_suite(quick=args.quick)
    print(format_table(rows))
    print(format_targets(rows, quick=args.quick))
    if args.json:
        write_json(args.json, header, rows)
    if args.md:
        Path(args.md).write_text(format_markdown(header, rows, quick=args.quick))
