# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when its module is
# imported, so it must be set before any test module imports latentscape.kernels.*:
# the Triton kernels then run on the CPU (numpy) and are checked against torch.
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
