"""Peak-EWMA: a latency estimate that jumps up at once and comes down smoothly.

From Finagle's PeakEwma, by way of tower's `load/peak_ewma.rs` and linkerd2-proxy. A sample above
the current estimate replaces it (the peak rule), so one slow answer makes an endpoint look slow
at once; a sample below is blended in with weight w = exp(-elapsed / decay), so it takes several
fast answers, or time, to look fast again.

Choices, and why:

- The estimate decays toward zero while no sample arrives, computed when it is read; reading
  never changes it. Finagle and tower get that decay by recording a zero sample on every read;
  linkerd later dropped it because it "mutates on read". Computing it on read keeps reads pure
  and independent of how often anyone looks. The decay is what lets an endpoint that was slow
  (or failing) be tried again once its estimate falls below its peers' costs: without it, an
  endpoint that lost every comparison would never get the call that shows it has recovered.
- A sample below the decayed estimate is blended into the decayed estimate:
  decayed * w + sample * (1 - w), with w = exp(-elapsed since the last sample / decay). After an
  idle spell the old estimate is both smaller and less trusted. Blending into the stored
  (undecayed) value instead would let a fast sample raise the estimate above what was just
  read. In scripts/sim_balancers.py (5 endpoints at 10 ms, one at 200 ms turning fast, 1,000
  calls/s, decay 10 s) the recovered endpoint has its fair share back within 7.5 s this way,
  and not within the 20 s simulated the other way, with the same latencies before the recovery.
  The result always lies between the sample and the decayed estimate.
"""
from __future__ import annotations

import math


class PeakEwma:
    __slots__ = ("_at", "_value", "decay")

    def __init__(self, decay: float) -> None:
        if decay <= 0:
            raise ValueError(f"decay {decay} must be positive")
        self.decay = decay
        self._value: float | None = None
        self._at = 0.0

    def get(self, now: float) -> float | None:
        """The estimate at `now` in seconds, or None before the first sample."""
        if self._value is None:
            return None
        elapsed = now - self._at
        if elapsed <= 0:
            return self._value
        return self._value * math.exp(-elapsed / self.decay)

    def observe(self, sample: float, now: float) -> None:
        if self._value is None:
            self._value = sample
        else:
            w = math.exp(-max(0.0, now - self._at) / self.decay)
            decayed = self._value * w
            self._value = sample if sample > decayed else decayed * w + sample * (1 - w)
        self._at = now
