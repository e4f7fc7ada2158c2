"""A job spec's YAML, read with its work bounded before and while parsing: a size cap, UTF-8 only, a nesting cap,
an alias-expansion budget and YAML's standard types only; every refusal is a SpecProblem with the file and line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor

from submitter.errors import SpecError, SpecProblem

MAX_SPEC_BYTES = 1024 * 1024  # a real spec is a few KB; data belongs in `inputs`, not in the spec
MAX_DEPTH = 50  # levels of lists/mappings; the spec's own schema needs 4
MAX_ALIAS_NODES = 10_000  # nodes reached through aliases, in all: a "billion laughs" file stops at its first big alias

# libyaml's parser is ~15x faster than PyYAML's own on a file at the size cap; only its events are used, so the
# checks below are the same with either (PyYAML installed without libyaml falls back to the Python parser).
PARSER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_YAML = "tag:yaml.org,2002:"
STR, NULL, BOOL, INT, FLOAT = (_YAML + t for t in ("str", "null", "bool", "int", "float"))
SEQ, MAP, MERGE = _YAML + "seq", _YAML + "map", _YAML + "merge"
_NULLS = {"", "~", "null", "Null", "NULL"}


class _Resolver(yaml.resolver.Resolver):
    """YAML 1.1's implicit types without timestamps (and the `=`/`!` oddities): an unquoted 2024-01-01 stays the
    text it looks like. No spec field is a date, every place one could appear (env, build_args, sweep, command)
    wants the text as written, and YAML 1.2's core schema has no timestamps either."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag in {BOOL, NULL, INT, FLOAT, MERGE}]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }


_RESOLVER = _Resolver()


class Mapping(yaml.MappingNode):
    """A mapping node that also indexes its keys (the first of duplicates), so finding a field's line is one dict
    lookup per level however many keys the mapping has."""

    def __init__(self, tag: str, start_mark: Any, flow_style: bool | None) -> None:
        super().__init__(tag, [], start_mark, None, flow_style)
        self.fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self._typed: dict[str, tuple[yaml.Node, yaml.Node]] | None = None

    def find(self, name: str) -> tuple[yaml.Node, yaml.Node] | None:
        """The key and value for `name` as written, or as Python prints a key YAML typed (`1:`, `null:`, `true:`),
        which is how pydantic names it."""
        pair = self.fields.get(name)
        if pair is None:
            if self._typed is None:  # built once, on the first miss
                build = _Constructor("").value
                self._typed = {str(build(k)): (k, v) for k, v in reversed(self.value) if k.tag != STR}
            pair = self._typed.get(name)
        return pair


def read_text(path: Path, file: str) -> str:
    """The file's text, refused unread when it is over the cap, and never read past the cap (it may grow)."""
    try:
        if not path.exists():
            _refuse(file, None, "no such file")
        if not path.is_file():  # a fifo or device could block or never end
            _refuse(file, None, "is not a regular file (a directory, device or pipe)")
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            _refuse(file, None, f"is {size:,} bytes; a spec may be at most {MAX_SPEC_BYTES:,} bytes (1 MiB): keep "
                                "data in `inputs` (local files or s3:// prefixes), not in the spec")
        with path.open("rb") as stream:
            data = stream.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:  # unreadable, a name too long, a loop of links
        _refuse(file, None, f"cannot be read: {exc.strerror or exc}")
    if len(data) > MAX_SPEC_BYTES:
        _refuse(file, None, f"is over {MAX_SPEC_BYTES:,} bytes (it grew while being read); a spec may be at most 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse(file, data.count(b"\n", 0, exc.start) + 1,
                f"is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}; save the file as UTF-8")


def compose(text: str, file: str, parser: type = PARSER) -> tuple[yaml.Node | None, list[SpecProblem]]:
    """The one document's node tree (None when empty), and its duplicate keys as problems; syntax errors and
    breached caps raise SpecError naming the line."""
    composer = _Composer(file)
    try:
        for event in yaml.parse(text, Loader=parser):
            composer.take(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        _refuse(file, mark.line + 1 if mark else None, f"not valid YAML: {exc.problem or exc.context}")
    except yaml.reader.ReaderError as exc:
        # libyaml counts the position in UTF-8 bytes, PyYAML's reader in characters
        c_parser = getattr(yaml, "CSafeLoader", None)
        in_bytes = c_parser is not None and issubclass(parser, c_parser)
        line = (text.encode("utf-8")[:exc.position].count(b"\n") if in_bytes else text.count("\n", 0, exc.position)) + 1
        shown = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        _refuse(file, line, f"not valid YAML: character {shown} is not allowed (a control character); remove it "
                            "or write it as an escape in a double-quoted string")
    except yaml.YAMLError as exc:
        _refuse(file, None, f"not valid YAML: {exc}")
    except RecursionError:
        # The composer below does not recurse; this guards a parser that might.
        _refuse(file, None, f"nests too deeply; a spec may nest at most {MAX_DEPTH} levels")
    return composer.root, composer.problems


def construct(node: yaml.Node, file: str) -> tuple[Any, list[SpecProblem]]:
    """Plain Python values (str, int, float, bool, None, list, dict) from a composed tree, and a problem for
    every other tag or a value its tag does not fit. The tree's depth and alias expansion are already bounded."""
    constructor = _Constructor(file)
    return constructor.value(node), constructor.problems


def _refuse(file: str, line: int | None, message: str) -> NoReturn:
    raise SpecError([SpecProblem(file, line, "", message)])


@dataclass
class _Open:
    """A list or mapping whose end event has not come yet."""

    node: yaml.Node
    path: str
    anchor: str | None
    size: int = 1  # its nodes with aliases expanded
    height: int = 1  # its levels with aliases expanded
    key: yaml.Node | None = None  # a mapping's key waiting for its value


@dataclass
class _Composer:
    """Builds nodes from parser events without recursing, so nesting costs no Python stack, and measures every
    subtree as it closes, so an alias is charged its expanded size and height in O(1)."""

    file: str
    root: yaml.Node | None = None
    problems: list[SpecProblem] = field(default_factory=list)
    stack: list[_Open] = field(default_factory=list)
    anchors: dict[str, tuple[yaml.Node, int, int]] = field(default_factory=dict)  # node, size, height
    open_anchors: set[str] = field(default_factory=set)
    aliased: int = 0
    documents: int = 0

    def take(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                self._refuse(line, "holds a second YAML document (after `---`); a spec is one document")
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event, line)
        elif isinstance(event, yaml.ScalarEvent):
            tag = event.tag if event.tag not in (None, "!") else _RESOLVER.resolve(
                yaml.ScalarNode, event.value, event.implicit)
            start: Any = event.start_mark  # libyaml's marks have the same fields as PyYAML's
            end: Any = event.end_mark
            node = yaml.ScalarNode(tag, event.value, start, end, event.style)
            if event.anchor is not None:
                self.anchors[event.anchor] = (node, 1, 0)
            self._add(node, 1, 0, line)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self._open(event, line)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            done = self.stack.pop()
            done.node.end_mark = event.end_mark
            if done.anchor is not None:
                self.open_anchors.discard(done.anchor)
                self.anchors[done.anchor] = (done.node, done.size, done.height)
            self._add(done.node, done.size, done.height, line)

    def _open(self, event: yaml.SequenceStartEvent | yaml.MappingStartEvent, line: int | None) -> None:
        if len(self.stack) >= MAX_DEPTH:
            self._refuse(line, f"nests deeper than {MAX_DEPTH} levels of lists and mappings; a spec needs a few")
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.node, yaml.MappingNode) and top.key is None:
            self._refuse(line, "has a list or mapping as a mapping key (`? [a, b]`); keys are plain names")
        sequence = isinstance(event, yaml.SequenceStartEvent)
        kind = yaml.SequenceNode if sequence else yaml.MappingNode
        tag = event.tag if event.tag not in (None, "!") else _RESOLVER.resolve(kind, None, event.implicit)
        start: Any = event.start_mark
        node: yaml.Node = (yaml.SequenceNode(tag, [], start, None, event.flow_style) if sequence
                           else Mapping(tag, start, event.flow_style))
        if event.anchor is not None:
            # An alias inside its own anchor's node would make a cycle: refused when it comes.
            self.anchors.pop(event.anchor, None)
            self.open_anchors.add(event.anchor)
        self.stack.append(_Open(node, self._child_path(), event.anchor))

    def _alias(self, event: yaml.AliasEvent, line: int | None) -> None:
        name = event.anchor
        if name not in self.anchors:
            why = ("is inside the node it refers to (a recursive alias)" if name in self.open_anchors
                   else "has no anchor before it; define it with &name first")
            self._refuse(line, f"alias *{name} {why}")
        node, size, height = self.anchors[name]
        self.aliased += size
        if self.aliased > MAX_ALIAS_NODES:
            self._refuse(line, f"alias *{name} expands the spec past {MAX_ALIAS_NODES:,} values reached through "
                               "aliases (an alias bomb?); write the values out or use fewer aliases")
        if len(self.stack) + height > MAX_DEPTH:
            self._refuse(line, f"alias *{name} nests the spec deeper than {MAX_DEPTH} levels")
        self._add(node, size, height, line)

    def _add(self, node: yaml.Node, size: int, height: int, line: int | None) -> None:
        if not self.stack:
            self.root = node
            return
        top = self.stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        if isinstance(top.node, yaml.SequenceNode):
            top.node.value.append(node)
        elif top.key is None:
            if not isinstance(node, yaml.ScalarNode):
                self._refuse(line, "has a list or mapping as a mapping key; keys are plain names")
            top.key = node
        else:
            key, top.key = top.key, None
            top.node.value.append((key, node))
            assert isinstance(top.node, Mapping)
            if key.value in top.node.fields:
                self.problems.append(SpecProblem(self.file, key.start_mark.line + 1, _join(top.path, key.value),
                                                 "is given twice; keep one"))
            else:
                top.node.fields[key.value] = (key, node)

    def _child_path(self) -> str:
        if not self.stack:
            return ""
        top = self.stack[-1]
        if isinstance(top.node, yaml.SequenceNode):
            return _join(top.path, len(top.node.value))
        return _join(top.path, top.key.value if top.key is not None else "?")

    def _refuse(self, line: int | None, message: str) -> NoReturn:
        _refuse(self.file, line, message)


def _join(path: str, part: object) -> str:
    return f"{path}.{shown(str(part))}" if path else shown(str(part))


def shown(text: str, limit: int = 80) -> str:
    """User text as it may appear in a message: control characters (a terminal escape) and lone surrogates
    escaped, and cut to `limit` characters."""
    return _clip(text if text.isprintable() else repr(text), limit)


class _Constructor:
    """Values from nodes: YAML's standard scalars through PyYAML's own converters, whose failures (`!!int abc`,
    `!!float ''`) become problems; any other tag is refused by name."""

    _convert = SafeConstructor()
    _scalars = {NULL: _convert.construct_yaml_null, BOOL: _convert.construct_yaml_bool,
                INT: _convert.construct_yaml_int, FLOAT: _convert.construct_yaml_float}

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[SpecProblem] = []

    def value(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != SEQ:
                return self._refused(node, "a list")
            return [self.value(item) for item in node.value]
        if node.tag != MAP:
            return self._refused(node, "a mapping")
        merged: dict[Any, Any] = {}
        own: dict[Any, Any] = {}
        for key, value in node.value:
            if key.tag == MERGE:
                merged.update(self._merge(value))
            else:
                own[self._scalar(key)] = self.value(value)
        return {**merged, **own}  # YAML's merge: the mapping's own keys win

    def _merge(self, node: yaml.Node) -> dict[Any, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[Any, Any] = {}
        for source in reversed(sources):  # the first mapping listed wins
            if not isinstance(source, yaml.MappingNode):
                self._problem(source, "`<<` merges mappings only, like `<<: *defaults`")
                continue
            built = self.value(source)
            if isinstance(built, dict):  # else its tag was refused, and that is reported
                merged.update(built)
        return merged

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag in (STR, MERGE):  # `<<` merges only as a key (see value); elsewhere it is the text
            return node.value
        convert = self._scalars.get(node.tag)
        if convert is None:
            return self._refused(node, "a value")
        try:
            if node.tag == NULL and node.value not in _NULLS:
                raise ValueError(node.value)
            return convert(node)
        except (ValueError, KeyError, IndexError, TypeError, OverflowError):
            # Python refuses ints of over 4,300 digits with ValueError too.
            what = {NULL: "null", BOOL: "boolean", INT: "whole number", FLOAT: "number"}[node.tag]
            self._problem(node, f"{_clip(node.value)!r} is not a {what} ({_shown_tag(node.tag)}); "
                                "quote it to make it text")
            return None

    def _refused(self, node: yaml.Node, kind: str) -> None:
        self._problem(node, f"the tag {_shown_tag(node.tag)} on {kind} is not accepted: a spec holds only "
                            "text, numbers, booleans, null, lists and mappings; remove the tag or quote the value")

    def _problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(SpecProblem(self.file, node.start_mark.line + 1, "", message))


def _shown_tag(tag: str) -> str:
    return shown("!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag, 60)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
