"""Low-pass FIR design for alias-free synthesis layers (no scipy needed).

Two designs, as the StyleGAN3 paper (Karras et al. 2021, appendix C/D) describes:

* a separable windowed-sinc filter with a Kaiser window whose beta comes from
  Kaiser's empirical attenuation formula — the same numbers as
  ``scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)``;
* a radially symmetric jinc filter (``J1(2 pi fc r) / (pi r)``) under the outer
  product of two Kaiser windows, normalised to unit DC gain (the "R" config).

Imported generators carry their filters as buffers; these functions only matter
for generators built here from a config.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["kaiser_beta", "kaiser_atten", "lowpass_filter"]


def kaiser_atten(numtaps: int, width: float) -> float:
    """Stop-band attenuation (dB) of a Kaiser FIR with ``numtaps`` taps and the
    transition ``width`` given as a fraction of Nyquist."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(atten: float) -> float:
    """Kaiser's beta for a stop-band attenuation in dB."""
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """Design a low-pass FIR; ``None`` for a single tap (identity).

    ``cutoff`` and ``width`` (full transition width) are in the units of ``fs``.
    Returns float32 ``[numtaps]`` (separable) or ``[numtaps, numtaps]`` (radial).
    """
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    nyq = fs / 2
    beta = kaiser_beta(kaiser_atten(numtaps, width / nyq))
    window = np.kaiser(numtaps, beta)
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        c = cutoff / nyq
        h = c * np.sinc(c * m) * window
        h = h / h.sum()
        return torch.as_tensor(h, dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = torch.as_tensor(np.hypot(*np.meshgrid(x, x)), dtype=torch.float64, device="cpu")
    # J1(2 pi fc r) / (pi r); the taps never sit at r = 0 for even numtaps, and the
    # limit there (fc) is used for odd ones.
    arg = 2 * cutoff * math.pi * r
    f = torch.where(r > 0, torch.special.bessel_j1(arg) / (math.pi * r.clamp_min(1e-30)), torch.full_like(r, cutoff))
    f = f.numpy() * np.outer(window, window)
    f = f / f.sum()
    return torch.as_tensor(f, dtype=torch.float32)
