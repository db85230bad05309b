"""The audit trail's event actions: the names a plugin may match ``event.action`` against in
``on_ticket_event`` (or read back with ``controller.events_since``), and the structured
``event.data`` each carries. Match on these and read ``event.data``; never parse ``event.detail``,
which is prose for people and may change.

New actions and new ``data`` keys may be added; these names and keys never change meaning.
"""

from __future__ import annotations

CREATED = "created"
"""A ticket was added (`mc ticket add` or `import`, or from a tracker). ``data``: ``source`` for a ticket
made from a tracker item, else none."""

DISPATCH = "dispatch"
"""A worker run started. ``data``: ``attempt`` (int), ``profile`` (str)."""

DONE = "done"
"""A worker run reported a commit (before review). ``data``: ``attempt``, ``sha``."""

DEATH = "death"
"""A worker run ended without a result. ``data``: ``attempt``, ``reason``."""

REJECTED_DONE = "rejected_done"
"""A DONE claim was refused (``verify_done_claim``): counted as a death. ``data``: ``attempt`` (None
when refused by a plugin through ``controller.treat_as_death``), ``reason``."""

REVIEW = "review"
"""A reviewer run started (``data``: ``attempt``, ``sha``), or a person recorded a verdict by hand
(``data``: ``verdict``, ``sha``)."""

VERDICT = "verdict"
"""A shadow review was stored. ``data``: ``verdict`` (``pass``, ``fail`` or ``uncertain``), ``sha``,
``attempt``, and with several review stages ``stage`` (the name of the stage whose verdict it is)."""

REVIEW_STAGE = "review_stage"
"""A review stage before the last passed; the next one is due. ``data``: ``stage`` (1-based), ``of``,
``name``, ``sha``, ``attempt``."""

STATUS = "status"
"""A ticket changed status. ``data``: ``from``, ``to``."""

ESCALATE = "escalate"
"""A ticket was handed to its owner. ``data``: ``owner``."""

KILLSWITCH = "killswitch"
"""The kill-switch was engaged or released. ``data``: ``engaged`` (bool), ``reason``."""

VETO = "veto"
"""A plugin held an automatic action. ``data``: ``action``."""

PLUGIN_ERROR = "plugin_error"
"""A plugin raised. ``data``: ``plugin``, ``hook``."""

REQUEUE = "requeue"
"""A run its own controller stopped (a shutdown) went back to todo: not a death. ``data``: ``attempt``."""

RECOVER = "recover"
"""A controller took over or adopted what a gone controller left. No ``data``."""

EDITED = "edited"
"""A person changed the ticket's title or body. ``data``: ``fields`` (the names of those that changed)."""

ANSWER = "answer"
"""A person answered a ticket waiting for them; it goes back to its worker with the answer. ``data``:
``by`` (who answered)."""

STOPPED = "stopped"
"""A person stopped the ticket (its run, if one was under way, is stopped, not a death) and parked it.
``data``: ``by``."""

EFFECT_FAILED = "effect_failed"
"""An effect hook (``on_ticket_event``, ``on_escalate``) failed on one item so many times that it was
given up. ``data``: ``plugin``, ``hook``, ``item`` (the event's or escalation's id), ``attempts``."""

DELIVERED = "delivered"
"""A done ticket's work was handed back to its tracker (``deliver_work``). ``data``: ``plugin``, ``url``,
``sha``."""

DELIVERY = "delivery"
"""A delivery ended in its tracker. ``data``: ``plugin``, ``url``, ``state`` (``merged`` or ``closed``)."""

FEEDBACK = "feedback"
"""Feedback on delivered work came from its tracker (failed checks, changes requested) and was handed to
the review policy as a failed review. ``data``: ``plugin``, ``sha``, ``ids`` (the tracker's ids)."""

DELIVERY_FAILED = "delivery_failed"
"""Handing a ticket's work back failed so many times that it was given up until the next start of the
controller (or ``mc sync``). ``data``: ``plugin``, ``attempts``, ``error``."""

DEATHS = (DEATH, REJECTED_DONE)
"""Both ways a run counts as a dead worker."""
