"""JAX functions of sat_fast (placeholder of the ffi branch: the functional branch owns this file)."""
