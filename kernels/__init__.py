"""Layer 0: one op per file (Triton kernel, launcher, autograd Function) with a
pure-torch reference of the same signature in ``kernels/reference``."""
