"""Activities a WOPI client reports on a file (AddActivities): comments, the people they mention, ...

Each activity is answered on its own (docs/wopi.md §3.16): one that is malformed or of a type
we do not keep gets a status of its own while the others are stored. An activity is kept as the
client sent it, keyed by the client's Id, so a client that retries a batch stores nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from .clock import Clock
from .db import Database
from .models import Activity
from .prepared import Statements
from .repository import insert_if_absent, load_file
from .text import text_problem

SUCCESS, BAD_ACTIVITY, UNSUPPORTED = 0, 2, 3  # ActivityResponses[].Status
MAX_ACTIVITIES = 100  # a batch; Office sends a handful
ID_LENGTH = 64
DATA_TEXT_LENGTH = 1024  # ContentId, NavigationId
COMMENT_TEXT_LENGTH = 16 * 1024
MAX_DEPTH = 32  # an activity's JSON: Office's are three levels deep
CONTENT_ACTIONS = ("created", "updated", "deleted")
_PERSON_TEXT = ("Name", "Id", "Provider", "Email")


@dataclass(frozen=True)
class Outcome:
    id: str
    status: int
    message: str = ""


def check(activity: object) -> tuple[Outcome, dict | None]:
    """An activity's outcome and, when it is to be kept, the activity; pure, for fuzzing."""
    if not isinstance(activity, dict):
        return Outcome("", BAD_ACTIVITY, "an activity is a JSON object"), None
    activity_id = activity.get("Id")
    if not isinstance(activity_id, str) or not 0 < len(activity_id) <= ID_LENGTH or text_problem(activity_id):
        return Outcome("", BAD_ACTIVITY, f"Id is required: a string of at most {ID_LENGTH} characters"), None
    problem = _unstorable(activity)
    if problem:
        return Outcome(activity_id, BAD_ACTIVITY, problem), None
    kind = activity.get("Type")
    if not isinstance(kind, str) or not kind:
        return Outcome(activity_id, BAD_ACTIVITY, "Type is required"), None
    if kind != "comment":
        return Outcome(activity_id, UNSUPPORTED, f"activities of type {kind[:64]} are not kept"), None
    problem = _comment_problem(activity.get("Data")) or _people_problem(activity.get("People", []))
    if problem:
        return Outcome(activity_id, BAD_ACTIVITY, problem), None
    return Outcome(activity_id, SUCCESS), activity


def _unstorable(activity: dict) -> str | None:
    """Why the activity cannot be stored: text (a value or a key) the database cannot hold, or nesting deeper
    than MAX_DEPTH (which storing it as JSON would recurse into); None if it can be."""
    pending: list[tuple[object, int]] = [(activity, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                return f"a text in the activity {problem}"
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                return f"the activity is nested more than {MAX_DEPTH} levels deep"
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending += [(child, depth + 1) for child in children]
    return None


def _comment_problem(data: object) -> str | None:
    if not isinstance(data, dict):
        return "a comment needs Data"
    if not _text(data.get("ContentId"), DATA_TEXT_LENGTH):
        return f"Data.ContentId is required: a string of at most {DATA_TEXT_LENGTH} characters"
    if data.get("ContentAction") not in CONTENT_ACTIONS:
        return f"Data.ContentAction must be one of {', '.join(CONTENT_ACTIONS)}"
    if "NavigationId" in data and not _text(data["NavigationId"], DATA_TEXT_LENGTH):
        return f"Data.NavigationId must be a string of at most {DATA_TEXT_LENGTH} characters"
    if "CommentText" in data and not _text(data["CommentText"], COMMENT_TEXT_LENGTH, empty=True):
        return f"Data.CommentText must be a string of at most {COMMENT_TEXT_LENGTH} characters"
    if "IsReply" in data and not isinstance(data["IsReply"], bool):
        return "Data.IsReply must be true or false"
    return None


def _people_problem(people: object) -> str | None:
    if not isinstance(people, list) or len(people) > MAX_ACTIVITIES:
        return f"People must be a list of at most {MAX_ACTIVITIES} people"
    for person in people:
        if not isinstance(person, dict):
            return "each of People is a JSON object"
        if any(key in person and not _text(person[key], DATA_TEXT_LENGTH, empty=True) for key in _PERSON_TEXT):
            return f"a person's {', '.join(_PERSON_TEXT)} are strings"
        if "Mentioned" in person and not isinstance(person["Mentioned"], bool):
            return "a person's Mentioned must be true or false"
    return None


def _text(value: object, limit: int, empty: bool = False) -> bool:
    return isinstance(value, str) and (empty or value != "") and len(value) <= limit


@dataclass(frozen=True)
class StoredActivity:
    activity_id: str
    user_id: str
    type: str
    received_at: datetime
    body: dict


class Activities:
    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock

    def add(
        self, file_id: str, user_id: str, activities: list, admit: Callable[[Statements], None] | None = None
    ) -> list[Outcome]:
        """Store what may be stored of a batch (one transaction); an outcome per activity, in order. `admit(t)`
        whether the batch may still land, asked in its transaction once the file's row is locked (as Files.put)."""
        outcomes = []
        with self.db.write() as s:
            load_file(s, file_id)  # 404 for a deleted file; the row lock orders this against a delete
            Statements.ask(s, admit)
            now = self.clock.now()
            for activity in activities:
                outcome, kept = check(activity)
                if kept is not None:
                    insert_if_absent(
                        s,
                        Activity,
                        file_id=file_id,
                        activity_id=outcome.id,
                        user_id=user_id,
                        type=kept["Type"],
                        body=json.dumps(kept, ensure_ascii=False),
                        received_at=now,
                    )
                outcomes.append(outcome)
        return outcomes

    def of_file(self, file_id: str) -> list[StoredActivity]:
        with self.db.read() as s:
            load_file(s, file_id)
            rows = s.scalars(
                sa.select(Activity)
                .where(Activity.file_id == file_id)
                .order_by(Activity.received_at, Activity.activity_id)
            )
            return [StoredActivity(r.activity_id, r.user_id, r.type, r.received_at, json.loads(r.body)) for r in rows]
