"""jax-cfd's Kolmogorov flow as SDA simulates it, timed: run with a side venv's Python, never runforge's.

    python -m venv /tmp/jaxcfd && /tmp/jaxcfd/bin/pip install "jax==0.5.3" "jaxlib==0.5.3" "jax-cfd==0.2.1"
    /tmp/jaxcfd/bin/python bench/jax_cfd_reference.py --size 64 [--init IN.npz --out OUT.npz --horizon 2]

`bench/kolmogorov_solver.py` makes that venv itself (about 20 s with PyPI reachable) and runs this.
jax-cfd 0.2.1 breaks on jax >= 0.6 (`jax.tree_map` was removed), hence the pin.

The step is the finite-volume semi-implicit Navier–Stokes step SDA uses (Re 1000, Kolmogorov forcing
k = 4, linear drag 0.1) with SDA's time step: `stable_time_step` at speed 5 and CFL 0.5, shortened so
that a whole number of steps covers the horizon. The initial velocity is read from --init (u and v
sampled at jax-cfd's staggered face points, as the bench writes them) or, without it, drawn by
`filtered_velocity_field`. Prints one JSON line (time step, steps, best wall seconds over --repeats after
compilation, on one CPU thread, float32 as jax's default) and writes the final u and v to --out.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax_cfd.base as cfd  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--horizon", type=float, default=2.0, help="simulated time")
    parser.add_argument("--reynolds", type=float, default=1000.0)
    parser.add_argument("--courant", type=float, default=0.5, help="SDA's CFL number at speed 5")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="copies of the initial state stepped together")
    parser.add_argument("--init", help="npz with u, v on the staggered faces ((batch,) size, size each)")
    parser.add_argument("--out", help="npz to write the final u, v to")
    args = parser.parse_args()

    size, viscosity = args.size, 1.0 / args.reynolds
    grid = cfd.grids.Grid((size, size), domain=((0, 2 * jnp.pi), (0, 2 * jnp.pi)))
    forcing = cfd.forcings.simple_turbulence_forcing(grid=grid, constant_magnitude=1.0, constant_wavenumber=4.0,
                                                     linear_coefficient=-0.1, forcing_type="kolmogorov")
    dt_stable = cfd.equations.stable_time_step(max_velocity=5.0, max_courant_number=args.courant,
                                               viscosity=viscosity, grid=grid)
    steps = max(1, math.ceil(args.horizon / dt_stable - 1e-9))
    dt = args.horizon / steps
    step = cfd.equations.semi_implicit_navier_stokes(grid=grid, forcing=forcing, dt=dt, density=1.0,
                                                     viscosity=viscosity)
    repeated = cfd.funcutils.repeated(step, steps=steps)
    bc = cfd.boundaries.periodic_boundary_conditions(2)

    def wrap(uv):
        return cfd.initial_conditions.wrap_variables(var=tuple(uv), grid=grid, bcs=(bc, bc))

    def transition(uv):
        return jnp.stack([c.data for c in repeated(wrap(uv))])

    def project(uv):
        return jnp.stack([c.data for c in cfd.pressure.projection(wrap(uv))])

    # batched over leading axes with jnp.vectorize, as SDA's sda/mcs.py runs it
    advance = jax.jit(jnp.vectorize(transition, signature="(c,h,w)->(c,h,w)"))
    if args.init:
        data = np.load(args.init)
        uv0 = jnp.asarray(np.stack((data["u"], data["v"]), axis=-3), jnp.float32)
        # the spectrally sampled field is divergence-free only up to the finite-volume stencil's error
        uv0 = jax.jit(jnp.vectorize(project, signature="(c,h,w)->(c,h,w)"))(uv0)
    else:
        u, v = cfd.initial_conditions.filtered_velocity_field(jax.random.PRNGKey(0), grid, maximum_velocity=3.0,
                                                              peak_wavenumber=4)
        uv0 = jnp.stack((u.data, v.data))
    uv0 = jnp.broadcast_to(uv0, (args.batch, *uv0.shape[-3:])) if args.batch > 1 and uv0.ndim == 3 else uv0

    started = time.perf_counter()
    uv = jax.block_until_ready(advance(uv0))
    compile_seconds = time.perf_counter() - started
    seconds = math.inf
    for _ in range(args.repeats):
        started = time.perf_counter()
        jax.block_until_ready(advance(uv0))
        seconds = min(seconds, time.perf_counter() - started)
    u_out, v_out = np.asarray(uv[..., 0, :, :], np.float64), np.asarray(uv[..., 1, :, :], np.float64)
    finite = bool(np.isfinite(u_out).all() and np.isfinite(v_out).all())
    if args.out:
        np.savez(args.out, u=u_out, v=v_out)
    print(json.dumps({"size": size, "batch": int(np.prod(uv.shape[:-3], dtype=int)), "dt": dt, "steps": steps,
                      "horizon": args.horizon, "seconds": seconds, "first_call_seconds": compile_seconds,
                      "finite": finite, "jax": jax.__version__, "dtype": str(uv.dtype)}), flush=True)


if __name__ == "__main__":
    main()
