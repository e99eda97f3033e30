"""Measurements on 8 simulated CPU devices, run in a subprocess by tests/test_multidevice.py.

XLA's device count is fixed when JAX starts, so this script sets
``--xla_force_host_platform_device_count=8`` before importing JAX and prints one JSON object
of measured values (errors against the single-device results, shardings as strings, shard
shapes, compiled memory); the test module asserts on them.
"""

from __future__ import annotations

import json
import os
import sys
import time

# On a loaded CI machine the 8 simulated devices' threads can reach a collective far apart:
# XLA's 40 s rendezvous timeout would abort the process, so it is raised.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_cpu_collective_call_terminate_timeout_seconds=900"
    " --xla_cpu_collective_timeout_seconds=900"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import chainrule as cr  # noqa: E402
from chainrule.curvature import _eigen  # noqa: E402

C = cr.curvature
OUT: dict = {}
_T = [time.perf_counter()]


def tick(label: str) -> None:
    """Per-part wall time on stderr (the test prints it when a run fails or is slow)."""
    now = time.perf_counter()
    print(f"  {label}: {now - _T[0]:.2f} s", file=sys.stderr)
    _T[0] = now


def rel(a, b) -> float:
    """Largest |a - b| over the tree, relative to the largest |b|."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    num = max(
        float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))
        for x, y in zip(la, lb, strict=True)
    )
    den = max(float(jnp.max(jnp.abs(jnp.asarray(y)))) for y in lb)
    return num / max(den, 1e-30)


def spec_of(x) -> list:
    """A leaf's PartitionSpec as a JSON list, trailing Nones dropped (P('m', None) == P('m'))."""
    out = [list(e) if isinstance(e, tuple) else e for e in x.sharding.spec]
    while out and out[-1] is None:
        out.pop()
    return out


def specs(tree) -> dict:
    return {
        jax.tree_util.keystr(p): spec_of(x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def shard_shapes(tree) -> dict:
    return {
        jax.tree_util.keystr(p): [list(x.shape), list(x.addressable_shards[0].data.shape)]
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def loss(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] - y) ** 2)


def loss_b(p, b):
    return loss(p, *b)


def model(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def problem(dtype, width=16):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "w1": (jax.random.normal(k1, (8, width)) / 8**0.5).astype(dtype),
        "b1": (0.1 * jax.random.normal(k2, (width,))).astype(dtype),
        "w2": (jax.random.normal(k3, (width, 4)) / width**0.5).astype(dtype),
    }
    x = jax.random.normal(k4, (32, 8)).astype(dtype)
    y = jnp.sin(x[:, :4] * 3.0).astype(dtype)
    return params, x, y


SPECS = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None)}


def data_parallel(tag, dtype, mesh1, full=True):
    params, x, y = problem(dtype)
    xs, ys = cr.sharding.shard_batch((x, y), mesh1, "data")
    v = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), params)
    vs = jax.tree.map(lambda a: jnp.stack([a, -2 * a, a * a]), v)
    r = OUT.setdefault(tag, {})
    r["batch_spec"] = spec_of(xs)
    # Eagerly (float32) each transform runs the AD core's program for these shardings; under
    # jax.jit (float64, and every reference) it is the raw composition, partitioned by XLA.
    g = cr.grad(loss) if full else jax.jit(cr.grad(loss))
    r["grad"] = rel(g(params, xs, ys), jax.jit(jax.grad(loss))(params, x, y))
    tick("grad")
    hvp = lambda p, u, x, y: cr.hvp(lambda q: loss(q, x, y), p, u)  # noqa: E731
    ref = jax.jit(lambda p, u, x, y: jax.jvp(jax.grad(lambda q: loss(q, x, y)), (p,), (u,))[1])
    r["hvp"] = rel((hvp if full else jax.jit(hvp))(params, v, xs, ys), ref(params, v, x, y))
    tick("hvp")
    if not full:
        return dense_checks(r, params, x, y, mesh1)
    hvpb = jax.jit(lambda p, us, x, y: cr.hvp_batched(lambda q: loss(q, x, y), p, us))
    ref_b = jax.jit(jax.vmap(ref, in_axes=(None, 0, None, None)))(params, vs, x, y)
    r["hvp_batched"] = rel(hvpb(params, vs, xs, ys), ref_b)
    tick("hvp_batched")

    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    g1 = C.ggn(model, params, batches, "mse")
    g8 = C.ggn(model, params, batches, "mse", mesh=mesh1, data_axis="data")
    r["ggn_data_spec"] = spec_of(g8.state["data"][0])
    r["ggn_matvec"] = rel(g8.matvec(v), g1.matvec(v))
    tick("ggn matvec")
    H8, dense = dense_checks(r, params, x, y, mesh1)
    # eigsh runs in param_sharded, on an operator whose batches and parameters are both split
    est = C.trace(H8, jax.random.PRNGKey(3), 8)
    tick("trace")
    r["trace"] = rel(est.value, jnp.trace(dense))
    r["trace_se"] = float(est.stderr) / abs(float(jnp.trace(dense)))


def dense_checks(r, params, x, y, mesh1):
    """The sharded-dataset Hessian operator against the dense single-device Hessian."""
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    dense = dense_hessian(params, x, y)
    H8 = C.hessian(loss_b, params, batches, mesh=mesh1)
    r["hessian_data_spec"] = spec_of(H8.state["data"][0])
    r["hessian_dense"] = rel(H8.to_dense(), dense)
    tick("to_dense")
    return H8, dense


def dense_hessian(params, x, y):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return jax.jit(jax.hessian(lambda z: loss(unravel(z), x, y)))(flat)


def param_sharded(tag, dtype, mesh2, full=True):
    params, x, y = problem(dtype)
    ps = jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh2, s)), params, SPECS)
    xs, ys = cr.sharding.shard_batch((x, y), mesh2, "data")
    v = jax.tree.map(jnp.ones_like, ps)
    vs = jax.tree.map(lambda a: jnp.stack([a, -a]), v)
    r = OUT.setdefault(tag, {})
    r["param_specs"] = specs(ps)
    f = lambda p: loss(p, xs, ys)  # noqa: E731
    ref_hv = jax.jvp(
        jax.grad(lambda p: loss(p, x, y)), (params,), (jax.tree.map(jnp.ones_like, params),)
    )[1]
    hv = cr.hvp(f, ps, v)
    tick("hvp")
    r["hvp"] = rel(hv, ref_hv)
    r["hvp_specs"], r["hvp_shards"] = specs(hv), shard_shapes(hv)
    H = C.hessian(loss_b, ps, [(x[:16], y[:16]), (x[16:], y[16:])], mesh=mesh2)
    hv2 = H.matvec(v)
    r["matvec_specs"] = specs(hv2)
    r["matvec"] = rel(hv2, ref_hv)
    tick("matvec")
    if not full:
        return
    hb = cr.hvp_batched(f, ps, vs)
    r["hvp_batched_specs"], r["hvp_batched_shards"] = specs(hb), shard_shapes(hb)
    tick("hvp_batched")
    jf = lambda p: jnp.tanh(xs @ p["w1"] + p["b1"])  # noqa: E731
    J = cr.jacobian(jf)(ps)
    Jref = jax.jacrev(lambda p: jnp.tanh(x @ p["w1"] + p["b1"]))(params)
    r["jacobian"] = rel(J, Jref)
    r["jacobian_shards"] = shard_shapes(J)
    tick("jacobian")

    # check_grads: passes, and its device program gets the directions split like the params
    seen = []
    orig = cr.check.program._eval

    def spy(f_, args, vs_, *rest):
        seen.extend(spec_of(a) for a in jax.tree.leaves(vs_))
        return orig(f_, args, vs_, *rest)

    cr.check.program._eval = spy
    try:
        rep = cr.check_grads(f, (ps,))
    finally:
        cr.check.program._eval = orig
    r["check_ok"] = bool(rep.passed)
    r["check_dir_specs"] = seen
    tick("check_grads")

    # The Lanczos basis: spy on the expand program eigsh builds on the operator.
    m = 20
    basis = []
    real = jax.jit(_eigen._expand_program(H._apply, H.size, m, H.dtype))

    def expand(state, V, T, R, start):
        out = real(state, V, T, R, start)
        basis.append([spec_of(V), spec_of(out[0])])
        return out

    H._programs[f"lanczos-expand/{m}"] = expand
    e = C.eigsh(H, k=2, num_vectors=m)
    tick("eigsh")
    r["basis_specs"] = basis
    r["eigvec_specs"] = specs(e.eigenvectors)
    r["eigsh_converged"] = bool(e.converged)
    dense = dense_hessian(params, x, y)
    r["eigsh"] = rel(e.eigenvalues, jnp.sort(jnp.linalg.eigvalsh(dense))[::-1][:2])

    # Compiled memory of the hvp program at a width where parameters dominate: per device,
    # the outputs are a quarter of the parameters and no temporary holds them whole.
    pw, xw, yw = problem(dtype, width=256)
    pws = jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh2, s)), pw, SPECS)
    xws, yws = cr.sharding.shard_batch((xw[:8], yw[:8]), mesh2, "data")
    vw = jax.tree.map(jnp.ones_like, pws)
    prog = jax.jit(lambda p, u: cr.hvp(lambda q: loss(q, xws, yws), p, u))
    mem = prog.lower(pws, vw).compile().memory_analysis()
    full = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(pw))
    r["mem"] = {
        "param_bytes": int(full),
        "output": int(mem.output_size_in_bytes),
        "temp": int(mem.temp_size_in_bytes),
        "argument": int(mem.argument_size_in_bytes),
    }
    tick("memory")


def bad_input(mesh1, mesh2):
    r = OUT.setdefault("bad", {})
    params, x, y = problem(jnp.float32)

    def msg(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the test asserts on type and text
            return f"{type(e).__name__}: {e}"
        return "no error"

    r["indivisible"] = msg(lambda: cr.sharding.shard_batch({"x": x[:30]}, mesh1, "data"))
    r["indivisible_op"] = msg(
        lambda: C.hessian(loss_b, params, [(x[:12], y[:12])], mesh=mesh1, data_axis="data")
    )
    r["no_axis"] = msg(lambda: C.ggn(model, params, [(x, y)], mesh=mesh2, data_axis="batch"))
    d = np.array(jax.devices())
    ma, mb = Mesh(d[:4], ("model",)), Mesh(d[4:], ("model",))
    mixed = {
        "w1": jax.device_put(params["w1"], NamedSharding(ma, P(None, "model"))),
        "b1": jax.device_put(params["b1"], NamedSharding(ma, P("model"))),
        "w2": jax.device_put(params["w2"], NamedSharding(mb, P("model", None))),
    }
    r["mixed_tree_mesh"] = msg(lambda: cr.sharding.tree_mesh(mixed))
    r["mixed_op"] = msg(lambda: C.hessian(loss_b, mixed, [(x, y)]))
    on_a = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(ma, P())), params)
    r["params_vs_mesh"] = msg(lambda: C.hessian(loss_b, on_a, [(x, y)], mesh=mesh1))


def main() -> None:
    d = np.array(jax.devices())
    OUT["devices"] = len(d)
    mesh1 = Mesh(d, ("data",))
    mesh2 = Mesh(d.reshape(2, 4), ("data", "model"))
    steps = [
        lambda: data_parallel("dp32", jnp.float32, mesh1),
        lambda: param_sharded("ps32", jnp.float32, mesh2),
        lambda: bad_input(mesh1, mesh2),
        lambda: jax.config.update("jax_enable_x64", True),
        lambda: data_parallel("dp64", jnp.float64, mesh1, full=False),
        lambda: param_sharded("ps64", jnp.float64, mesh2, full=False),
    ]
    only = os.environ.get("CHAINRULE_MD_STEPS")  # e.g. "0,3,4": profile some steps
    for i, step in enumerate(steps):
        if only and str(i) not in only.split(","):
            continue
        t0 = time.perf_counter()
        step()
        print(f"step {i}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    json.dump(OUT, sys.stdout)


if __name__ == "__main__":
    main()
