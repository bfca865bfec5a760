"""SATs inside JAX code: saliency methods and segment statistics as pure functions under jit, vmap and grad."""
