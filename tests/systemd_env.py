"""systemd's EnvironmentFile= format, for tests that read deploy/wopihost.env as systemd will.

This machine's systemd cannot start a service without being PID 1, so the rules are implemented here: as
systemd.exec(5) documents them and src/basic/env-file.c (parse_env_file_internal) applies them, state for
state. Comments are lines whose first non-blank character is # or ;. Everything else after the = is the
value: a # in it is kept. An unquoted value loses its leading and trailing blanks, keeps inner ones, and a
backslash keeps the next character (a backslash at the end of the line joins the next line). '...' keeps
everything up to the next ', lines included; "..." too, except that a backslash before " \\ ` $ keeps only
that character, before a line end joins the lines, and before anything else stays. Quoted and unquoted parts
may follow one another. A line without = is ignored, as is a name that is not a variable name (systemd logs
it); a later assignment replaces an earlier one.

`parse` is strict: what systemd would ignore, or reads differently between versions (a comment line ending
in a backslash continues onto the next line before systemd 254, not since), is an EnvFileError.
"""

from __future__ import annotations

import re

WHITESPACE, NEWLINE, COMMENTS = " \t\n\r", "\n\r", "#;"
SHELL_NEED_ESCAPE = '"\\`$'
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class EnvFileError(ValueError):
    pass


def parse(text: str) -> dict[str, str]:
    """The variables a unit with EnvironmentFile= naming a file of this text is started with."""
    env: dict[str, str] = {}
    state, key, value = "pre_key", [], []
    key_blank = value_blank = None  # where trailing blanks of the key or the unquoted value begin

    def push(at: int, chop_value: bool) -> None:
        name = "".join(key[:key_blank] if key_blank is not None else key)
        text_value = "".join(value[:value_blank] if chop_value and value_blank is not None else value)
        if not NAME.match(name):
            raise EnvFileError(f"line {line_of(at)}: {name!r} is not a variable name: systemd ignores it")
        if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text_value):
            raise EnvFileError(f"line {line_of(at)}: {name} has control characters: systemd ignores it")
        env[name] = text_value

    def line_of(at: int) -> int:
        return text.count("\n", 0, at) + 1

    for at, c in enumerate(text):
        if state == "pre_key":
            if c in COMMENTS:
                state = "comment"
            elif c not in WHITESPACE:
                state, key, key_blank = "key", [c], None
        elif state == "key":
            if c in NEWLINE:
                state = "pre_key"  # no "=": not an assignment
            elif c == "=":
                state, value, value_blank = "pre_value", [], None
            else:
                if c not in WHITESPACE:
                    key_blank = None
                elif key_blank is None:
                    key_blank = len(key)
                key.append(c)
        elif state == "pre_value":
            if c in NEWLINE:
                push(at, False)
                state = "pre_key"
            elif c == "'":
                state = "single"
            elif c == '"':
                state = "double"
            elif c == "\\":
                state = "value_escape"
            elif c not in WHITESPACE:
                state = "value"
                value.append(c)
        elif state == "value":
            if c in NEWLINE:
                push(at, True)
                state = "pre_key"
            elif c == "\\":
                state, value_blank = "value_escape", None
            else:
                if c not in WHITESPACE:
                    value_blank = None
                elif value_blank is None:
                    value_blank = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in NEWLINE:
                value.append(c)
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value.append(c)
        elif state == "double_escape":
            state = "double"
            if c in SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value += ["\\", c]
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in NEWLINE:
                state = "pre_key"
        elif state == "comment_escape":
            if c in NEWLINE:
                raise EnvFileError(
                    f"line {line_of(at)}: a comment ends in a backslash, which continues it onto "
                    "the next line before systemd 254 and not since"
                )
            state = "comment"
    if state not in ("pre_key", "key", "comment", "comment_escape"):
        push(len(text), state == "value")
    return env
