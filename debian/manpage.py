#!/usr/bin/python3
"""Write a section-1 man page for each program of pyproject.toml's [project.scripts] from its own click
help: every command, its usage, its text and its options, and the exit-code table of its epilog.

Run by debian/rules during the build (`python3 debian/manpage.py OUTDIR`, from the top of the source
tree, which is put on sys.path). The page's date is SOURCE_DATE_EPOCH (dpkg sets it from
debian/changelog), so the pages are reproducible. roff is written by hand: each text is escaped, a
click paragraph marked "\\b" (no re-wrapping) becomes a no-fill block.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import click


def roff(text: str) -> str:
    """Escape text for roff: backslashes, minus signs, and a control character at a line's start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln[:1] in (".", "'") else ln for ln in text.splitlines())


def paragraphs(text: str) -> Iterator[tuple[bool, str]]:
    """(keep_lines, text) per paragraph of a click help text (cut at \\f, as click does)."""
    text = inspect.cleandoc(text.split("\f")[0])
    for para in re.split(r"\n\s*\n", text):
        if para.startswith("\b"):
            yield True, para[1:].strip("\n")
        elif para.strip():
            yield False, " ".join(para.split())


def body(text: str) -> list[str]:
    out = []
    for keep, para in paragraphs(text):
        out += [".PP", ".nf", roff(para), ".fi"] if keep else [".PP", roff(para)]
    return out


def options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in cmd.get_params(ctx):
        rec = param.get_help_record(ctx)
        if rec is not None:  # None: an argument, or a hidden option
            out += [".TP", f"\\fB{roff(rec[0])}\\fR", roff(rec[1]) or "\\&"]
    return out


def command(cmd: click.Command, ctx: click.Context, epilog: str | None) -> list[str]:
    usage = " ".join([ctx.command_path, *cmd.collect_usage_pieces(ctx)])
    out = [f'.SS "{roff(usage)}"'] + body(cmd.help or "") + options(cmd, ctx)
    if cmd.epilog and cmd.epilog != epilog:
        out += body(cmd.epilog)
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += command(sub, click.Context(sub, info_name=name, parent=ctx), epilog)
    return out


def page(prog: str, cmd: click.Command, version: str, doc_package: str) -> str:
    ctx = click.Context(cmd, info_name=prog)
    date = time.strftime("%Y-%m-%d", time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", "0"))))
    short = cmd.get_short_help_str(limit=200).rstrip(".").removeprefix(f"{prog}:").strip()
    lines = [f'.TH "{prog.upper()}" 1 "{date}" "edif {version}" "User Commands"',
             ".SH NAME", f"{roff(prog)} \\- {roff(short)}",
             ".SH SYNOPSIS", f"\\fB{roff(prog)}\\fR {roff(' '.join(cmd.collect_usage_pieces(ctx)))}",
             ".SH DESCRIPTION", *body(cmd.help or ""),
             ".SH OPTIONS", *options(cmd, ctx)]
    if isinstance(cmd, click.Group):
        lines.append(".SH COMMANDS")
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                lines += command(sub, click.Context(sub, info_name=name, parent=ctx), cmd.epilog)
    if cmd.epilog:
        lines += [".SH EXIT STATUS", *body(cmd.epilog)]
    docs = f"/usr/share/doc/{doc_package}"
    lines += [".SH SEE ALSO", roff(f"{docs}/operations.md, {docs}/packaging.md")]
    return "\n".join(lines) + "\n"


# Which package's documentation directory a program's page points at (debian/*.docs).
DOC_PACKAGE = {"edifd": "edif-host", "edifctl": "edif-host", "edif-agent": "edif-agent",
               "edif-target": "edif-target"}


def main(outdir: str) -> None:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    sys.path.insert(0, os.getcwd())
    os.makedirs(outdir, exist_ok=True)
    for prog, target in project["scripts"].items():
        module, _, attr = target.partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        Path(outdir, f"{prog}.1").write_text(page(prog, cmd, project["version"], DOC_PACKAGE[prog]))


if __name__ == "__main__":
    main(sys.argv[1])
