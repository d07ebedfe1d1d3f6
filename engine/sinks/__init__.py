"""Frame sinks: where finished frames go (files now; window and streams plug in here).

Every sink writes under a temporary name and renames on ``close``, so an output that
looks complete is complete; ``abort`` removes the partial output.
"""

from latentscape.sinks.base import FrameSink, open_sink
from latentscape.sinks.files import Mp4Sink, PngSequenceSink

__all__ = ["FrameSink", "Mp4Sink", "PngSequenceSink", "open_sink"]
