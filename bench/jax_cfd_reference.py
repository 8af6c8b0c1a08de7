"""jax-cfd's Kolmogorov flow as SDA simulates it, timed: run with a throwaway venv's Python, never runforge's.

    python -m venv /tmp/jaxcfd && /tmp/jaxcfd/bin/pip install "jax==0.5.3" "jaxlib==0.5.3" jax-cfd
    /tmp/jaxcfd/bin/python bench/jax_cfd_reference.py 64 256

jax-cfd 0.2.1 breaks on jax >= 0.6 (`jax.tree_map` was removed), hence the pin. For each grid
size, prints one JSON line: the finite-volume semi-implicit Navier–Stokes step SDA uses
(Re 1000, Kolmogorov forcing k = 4, linear drag 0.1, CFL 0.5 at speed 5), its time step, and
steps per second after compilation, on one CPU thread. `bench/kolmogorov_solver.py
--jax-python` runs this and prints the ratios.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax_cfd.base as cfd  # noqa: E402


def measure(size: int, steps: int) -> dict:
    grid = cfd.grids.Grid((size, size), domain=((0, 2 * jnp.pi), (0, 2 * jnp.pi)))
    forcing = cfd.forcings.simple_turbulence_forcing(grid=grid, constant_magnitude=1.0, constant_wavenumber=4.0,
                                                     linear_coefficient=-0.1, forcing_type="kolmogorov")
    dt = cfd.equations.stable_time_step(max_velocity=5.0, max_courant_number=0.5, viscosity=1e-3, grid=grid)
    step = cfd.equations.semi_implicit_navier_stokes(grid=grid, forcing=forcing, dt=dt, density=1.0,
                                                     viscosity=1e-3)
    advance = jax.jit(cfd.funcutils.repeated(step, steps=steps))
    v = cfd.initial_conditions.filtered_velocity_field(jax.random.PRNGKey(0), grid, maximum_velocity=3.0,
                                                       peak_wavenumber=4)
    v = advance(v)  # compile and warm up
    jax.block_until_ready(v)
    started = time.perf_counter()
    v = advance(v)
    jax.block_until_ready(v)
    elapsed = time.perf_counter() - started
    finite = all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(v))
    return {"size": size, "dt": float(dt), "steps": steps, "steps_per_second": steps / elapsed, "finite": finite,
            "jax": jax.__version__}


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["64"]:
        size = int(arg)
        print(json.dumps(measure(size, 400 if size <= 64 else 200)), flush=True)
