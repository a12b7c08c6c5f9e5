"""A stand-in for StimulusSet in tests: the contract (ids, __len__, __contains__, load) over a dict."""

import numpy as np


class FakeStimuli:
    """Counts loads; with `fail_after`, loads after that many raise (a crash mid-extraction)."""

    def __init__(self, images: dict[str, np.ndarray], fail_after: int | None = None):
        self.images, self.fail_after, self.loads = images, fail_after, 0

    @property
    def ids(self):
        return list(self.images)

    def __len__(self):
        return len(self.images)

    def __contains__(self, i):
        return i in self.images

    def load(self, i):
        self.loads += 1
        if self.fail_after is not None and self.loads > self.fail_after:
            raise RuntimeError("simulated crash")
        return self.images[i]
