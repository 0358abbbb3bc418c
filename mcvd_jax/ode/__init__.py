"""Shared ODE machinery on Diffrax: one `solve`, CNF log-densities (exact or Hutchinson
divergence) and the RNODE regularisers. Pure JAX + Diffrax; imports no TensorFlow.

    settings = settings_from_config(config.ode, "ode")
    sol = solve(field_fn, y0, 0.0, 1.0, params, settings)           # sol.ys, sol.num_evals
    out = cnf_log_density(make_cnf_dynamics(field_fn), x, params, settings, key=key)
"""

from mcvd_jax.ode.cnf import (CnfDynamics, CnfOutput, CnfState, cnf_error_mask, cnf_log_density,
                              draw_probe, exact_divergence, hutchinson_divergence,
                              make_cnf_dynamics, standard_normal_log_prob)
from mcvd_jax.ode.settings import (OdeConfigError, OdeSettings, check_settings,
                                   settings_from_config)
from mcvd_jax.ode.solve import (OdeMaxStepsError, OdeSolveError, Solution, solve,
                                state_norm)

__all__ = [
    "CnfDynamics", "CnfOutput", "CnfState", "OdeConfigError", "OdeMaxStepsError", "OdeSettings",
    "OdeSolveError", "Solution", "check_settings", "cnf_error_mask", "cnf_log_density",
    "draw_probe", "exact_divergence", "hutchinson_divergence", "make_cnf_dynamics",
    "settings_from_config", "solve", "standard_normal_log_prob", "state_norm",
]
