"""A take's accepted samples cut into rounds, in each of which a stream appears at most once.

The model steps a round in one pool call, and a stream's samples must reach it
in order. A stream's k-th sample of the take goes into round k, so a burst of
one stream (an MQTT payload with many of its lines, a sensor that wrote ahead)
becomes the tail of the following rounds instead of ending the others' round:
a take of 10 lines from each of 100 streams is 10 rounds of 100, not 1,000
rounds of about one.

Whatever restarts or removes a stream that still has samples here (a gap
reset, a requested reset, an eviction) steps every pending round first, so
the stream's earlier samples meet the state they followed. The live path and
the write-ahead log's replay fill it alike, so a replay steps the same rounds.
"""
from __future__ import annotations


class Rounds:
    __slots__ = ("first", "_later", "_depth")

    def __init__(self) -> None:
        self.first: dict = {}  # stream id -> Sample: round 0, the one nearly every sample joins
        self._later: list[dict] = []  # rounds 1.. (only a take in which some stream comes again)
        self._depth: dict[str, int] = {}  # streams in the later rounds: how many rounds they are in

    def add(self, sample) -> None:
        """The sample into its stream's next round."""
        stream = sample.stream
        if stream not in self.first:
            self.first[stream] = sample
            return
        depth = self._depth.get(stream, 1)
        if depth > len(self._later):
            self._later.append({})
        self._later[depth - 1][stream] = sample
        self._depth[stream] = depth + 1

    def __contains__(self, stream: str) -> bool:
        """Whether the stream has a sample waiting (its first one is in round 0)."""
        return stream in self.first

    def __bool__(self) -> bool:
        return bool(self.first)

    def drain(self):
        """Every pending round, in order, each emptied after its consumer returns; the first dict is kept (the
        caller's loop holds it)."""
        later, self._later = self._later, []
        self._depth.clear()
        for batch in [self.first, *later]:
            yield batch
            batch.clear()
