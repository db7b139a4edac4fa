"""The state machines of production: task status, work-order approval and work-order status.

Each machine is one transition table: per action, the states it may start from and the state it leads
to. services.py consults only these tables (never a list of statuses of its own), so adding a state or
an action is a change here (plus the migration Django generates for the new choice). A state without
any outgoing action is final (a task's completed and cancelled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.db import models

from workorder.core.errors import Conflict


class TaskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class WorkOrderStatus(models.TextChoices):
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


@dataclass(frozen=True)
class Action:
    moves: Mapping[str, str]  # from state -> to state
    refusal: str  # the 409 message when the current state is not in `moves`; {state} and the caller's names


class StateMachine:
    def __init__(self, name: str, states: type[models.TextChoices], actions: Mapping[str, Action]):
        for action_name, action in actions.items():
            unknown = (set(action.moves) | set(action.moves.values())) - set(states.values)
            assert not unknown, f"{name}.{action_name} names unknown states {sorted(unknown)}"
        self.name = name
        self.states = states
        self.actions = dict(actions)

    def allows(self, action: str, state: str) -> bool:
        return state in self.actions[action].moves

    def sources(self, action: str) -> list[str]:
        """The states `action` may start from (for conditional UPDATEs: WHERE status IN ...)."""
        return list(self.actions[action].moves)

    def target(self, action: str, state: str | None = None, **context) -> str:
        """Where `action` leads from `state` (Conflict if it may not start there). Without a state: the one
        target every source leads to."""
        moves = self.actions[action].moves
        if state is None:
            (target,) = set(moves.values())
            return target
        if state not in moves:
            raise Conflict(self.actions[action].refusal.format(state=state, **context))
        return moves[state]

    def require(self, action: str, state: str, **context) -> None:
        self.target(action, state, **context)

    @property
    def final_states(self) -> list[str]:
        """States no action leaves."""
        leaving = {state for action in self.actions.values() for state in action.moves}
        return [state for state in self.states.values if state not in leaving]

    @property
    def open_states(self) -> list[str]:
        final = set(self.final_states)
        return [state for state in self.states.values if state not in final]


_T = TaskStatus
TASK = StateMachine("task", TaskStatus, {
    "claim": Action({_T.PENDING: _T.IN_PROGRESS}, "Only pending tasks can be claimed; this one is {state}."),
    "assign": Action({_T.PENDING: _T.IN_PROGRESS, _T.IN_PROGRESS: _T.IN_PROGRESS},
                     "Only pending or in-progress tasks can be assigned; this one is {state}."),
    "report_progress": Action({_T.IN_PROGRESS: _T.IN_PROGRESS},
                              "Progress can only be reported on an in-progress task; this one is {state}."),
    # the report that reaches the planned quantity
    "finish": Action({_T.IN_PROGRESS: _T.COMPLETED}, "Only in-progress tasks can be finished; this one is {state}."),
    "complete": Action({_T.IN_PROGRESS: _T.COMPLETED}, "Only in-progress tasks can be completed; this one is {state}."),
})

_A = ApprovalStatus
APPROVAL = StateMachine("work-order approval", ApprovalStatus, {
    "approve": Action({_A.PENDING: _A.APPROVED}, "Work order {number} is already {state}."),
    "reject": Action({_A.PENDING: _A.REJECTED}, "Work order {number} is already {state}."),
    "change_plan": Action({_A.PENDING: _A.PENDING}, "Work order {number} is {state}: customer, product and "
                                                    "quantity can only change while it is pending approval."),
})

_W = WorkOrderStatus
WORK_ORDER = StateMachine("work order", WorkOrderStatus, {
    "start": Action({_W.OPEN: _W.IN_PROGRESS}, "Work order {number} is {state} and cannot start."),
    "change": Action({_W.OPEN: _W.OPEN, _W.IN_PROGRESS: _W.IN_PROGRESS},
                         "Work order {number} is {state} and can no longer change."),
    "complete": Action({_W.OPEN: _W.COMPLETED, _W.IN_PROGRESS: _W.COMPLETED},
                       "Work order {number} is {state} and cannot complete."),
    "cancel": Action({_W.OPEN: _W.CANCELLED}, "Work order {number} is {state} and cannot be cancelled."),
})

