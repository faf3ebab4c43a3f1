"""Two ends of one connection in memory, after h11's ``ConnectionPair`` (tests/helpers.py): each frame one end sends is
recorded by its own machine, queued, and later received by the other's, so tests can interleave the two directions
the way a network may.
"""

from __future__ import annotations

import copy
from collections import deque

from dfsd.protocol.exchanges import Conversation, Side
from dfsd.protocol.messages import Message


class ConversationPair:
    def __init__(self, role: str) -> None:
        self.ends = {side: Conversation(role, side) for side in Side}
        self.in_flight: dict[Side, deque[Message]] = {side: deque() for side in Side}  # keyed by the receiver

    def clone(self) -> ConversationPair:
        """An independent copy, to try a frame on without touching this pair."""
        twin = copy.copy(self)
        twin.ends = {side: copy.copy(end) for side, end in self.ends.items()}
        twin.in_flight = {side: deque(frames) for side, frames in self.in_flight.items()}
        return twin

    @property
    def dialer(self) -> Conversation:
        return self.ends[Side.DIALER]

    @property
    def listener(self) -> Conversation:
        return self.ends[Side.LISTENER]

    def send(self, sender: Side, message: Message) -> None:
        """``sender`` sends ``message``: its machine records it, and it is on its way to the other end."""
        self.ends[sender].send(message)
        self.in_flight[_other(sender)].append(message)

    def deliver(self, receiver: Side) -> Message:
        """The oldest frame on its way to ``receiver`` arrives."""
        message = self.in_flight[receiver].popleft()
        self.ends[receiver].receive(message)
        return message

    def exchange(self, *frames: tuple[Side, Message]) -> None:
        """Send and deliver each frame at once (no crossing); both ends must agree on the state after each."""
        for sender, message in frames:
            self.send(sender, message)
            self.deliver(_other(sender))
            assert self.dialer.state is self.listener.state, message


def _other(side: Side) -> Side:
    return Side.LISTENER if side is Side.DIALER else Side.DIALER
