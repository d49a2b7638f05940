"""The light composer gives the tree PyYAML's composer gives: kinds, tags, values, lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from healthd.config import parse_text
from healthd.config.compose import compose
from healthd.config.source import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def shape(node: Node | None) -> object:
    """A node as plain data: kind, tag, line and value, recursively."""
    if node is None:
        return None
    line = node.start_mark.line
    if isinstance(node, ScalarNode):
        return ("scalar", node.tag, line, node.value)
    if isinstance(node, SequenceNode):
        return ("seq", node.tag, line, [shape(n) for n in node.value])
    assert isinstance(node, MappingNode)
    return ("map", node.tag, line, [(shape(k), shape(v)) for k, v in node.value])


DOCUMENTS = [
    "",
    "a: 1\n",
    "plain\n",
    "- 1\n- 2.5\n- true\n- null\n- ~\n- '007'\n- 0x1f\n- 1_000\n",
    "a: {b: [1, 2, {c: d}], e: !!str 5}\nf: |\n  two\n  lines\n",
    "base: &base {interval: 1s, fall: 2}\nuse:\n  <<: *base\n  fall: 3\nlist: [*base, *base]\n",
    '? complex key\n: value\nempty:\nquoted: "x: y"\n',
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_the_same_tree_as_pyyaml(text: str) -> None:
    assert shape(compose(text)) == shape(yaml.compose(text, Loader=yaml.SafeLoader))


def test_the_shipped_example_config_composes_the_same() -> None:
    text = (ROOT / "etc" / "healthd.yaml").read_text()
    assert shape(compose(text)) == shape(yaml.compose(text, Loader=yaml.SafeLoader))


def test_an_alias_is_the_anchored_node() -> None:
    root = compose("a: &x {k: v}\nb: *x\n")
    assert isinstance(root, MappingNode)
    (_, a), (_, b) = root.value
    assert a is b


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: *nowhere\n", "undefined alias"),
        ("a: &x 1\nb: &x 2\n", "duplicate anchor"),
        ("a: 1\n---\nb: 2\n", "single document"),
        ("a: [1, 2\n", "expected"),  # a syntax error from the parser
    ],
)
def test_bad_yaml_raises_a_yaml_error(text: str, problem: str) -> None:
    with pytest.raises(yaml.YAMLError, match=problem):
        compose(text)


def test_bad_yaml_is_a_config_issue_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_text("virtual_servers:\n  - name: a\n    port: *nowhere\n", "bad.yaml")
    assert str(info.value).startswith("bad.yaml:3: invalid YAML")


def test_a_bad_merge_key_is_a_config_issue_not_a_crash() -> None:
    with pytest.raises(ConfigError) as info:
        parse_text("virtual_servers:\n  - <<: 5\n    name: a\n", "merge.yaml")
    assert "merge.yaml:2: virtual_servers" in str(info.value)
    assert "invalid merge key" in str(info.value)
