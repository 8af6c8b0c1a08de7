"""The numba kernel of the solver's CPU path: everything of an IF-RK4 stage between two FFTs in one pass.

`solver.KolmogorovFlow` transforms with torch (MKL on the CPU); between the transforms a stage is
elementwise work on the band of modes: the nonlinear term from the transform of z², the RK4 update of
the band state and the spectrum of the next z. As torch ops that is about a dozen calls on arrays of
about a thousand modes at 64², each paying torch's per-call cost; here it is one call. Complex arrays
arrive as float views with a trailing (real, imaginary) axis.

Imported lazily: without numba the solver does the same with torch ops.
"""

from __future__ import annotations

from numba import njit


@njit(inline="always")
def _rk4_update(stage, real, state, nl, b, r, j, c, v):
    """Component c of the stage state that the next evaluation sees, after updating the band state."""
    if stage == 0:  # decayed = E d; the stage after k1
        decayed = real[0, r, j] * state[0, b, r, j, c]
        state[1, b, r, j, c] = decayed
        return decayed + real[1, r, j] * v
    if stage == 1:
        return state[1, b, r, j, c] + real[2, r, j] * v
    if stage == 2:  # the last stage starts from E² d
        decayed = real[0, r, j] * state[1, b, r, j, c]
        state[1, b, r, j, c] = decayed
        return decayed + real[3, r, j] * v
    done = (state[1, b, r, j, c] + real[4, r, j] * nl[0, b, r, j, c]
            + real[5, r, j] * (nl[1, b, r, j, c] + nl[2, b, r, j, c]) + real[6, r, j] * v)
    state[0, b, r, j, c] = done  # the step's result, where the next step's first evaluation starts
    return done


@njit(cache=True)
def ifrk4_stage(y, rows, coef, real, state, nl, stage, z_hat):
    """One stage, after the transform y = FFT(z²) of z = u + iv (B, N, N, 2).

    rows (R,): the full-spectrum rows of the band's kx; the band is those rows × columns ky = 0..band-1.
    coef (3, R, band, 2): the spectrum of z per vorticity mode K, the laminar vorticity, the nonlinear
    weights α. real (7, R, band): the integrating factor and RK4 weights. state (2, B, R, band, 2): the
    band deviation from the laminar state d and its decayed copy; nl (4, B, R, band, 2): the stages'
    nonlinear terms, this one written at `stage`; z_hat (B, N, N, 2): the next z's spectrum, written at the
    band modes and their mirror images (the rest stays zero)."""
    batch, n = y.shape[0], y.shape[1]
    count, band = real.shape[1], real.shape[2]
    for b in range(batch):
        for r in range(count):
            i = rows[r]
            mirror_row = (n - i) % n
            y_row, y_mirror, z_row, z_mirror = y[b, i], y[b, mirror_row], z_hat[b, i], z_hat[b, mirror_row]
            k_row, laminar_row, alpha_row = coef[0, r], coef[1, r], coef[2, r]
            for j in range(band):
                mirror_col = n - j if j > 0 else 0
                ar, ai = alpha_row[j, 0], alpha_row[j, 1]
                yr, yi = y_row[j, 0], y_row[j, 1]
                mr, mi = y_mirror[mirror_col, 0], y_mirror[mirror_col, 1]
                # α y(k) + conj(α y(−k)): the transform of the real nonlinear term, Hermitian to the bit
                vr = (ar * yr - ai * yi) + (ar * mr - ai * mi)
                vi = (ar * yi + ai * yr) - (ar * mi + ai * mr)
                nl[stage, b, r, j, 0] = vr
                nl[stage, b, r, j, 1] = vi
                wr = laminar_row[j, 0] + _rk4_update(stage, real, state, nl, b, r, j, 0, vr)
                wi = laminar_row[j, 1] + _rk4_update(stage, real, state, nl, b, r, j, 1, vi)
                kr, ki = k_row[j, 0], k_row[j, 1]
                z_row[j, 0] = kr * wr - ki * wi
                z_row[j, 1] = kr * wi + ki * wr
                if j > 0:  # ẑ(−k) = K(−k) conj(ω̂(k)) = −K(k) conj(ω̂(k)); column 0 holds both signs itself
                    z_mirror[mirror_col, 0] = -(kr * wr + ki * wi)
                    z_mirror[mirror_col, 1] = kr * wi - ki * wr
