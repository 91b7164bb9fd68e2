"""Tests of the typed config loader (tcsa_uda.config)."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from tcsa_uda.config import apply_overrides, from_dict, load_config, parse_override, save_config, to_dict
from tcsa_uda.errors import ConfigError, MissingPathError


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    tags: tuple[str, ...] = ()
    path: str | None = None


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    flag: bool = False
    items: list[Inner] = field(default_factory=list)


def test_defaults_and_nested():
    cfg = from_dict(Outer, {"inner": {"lr": 1, "mode": "b"}, "items": [{"steps": 3}]})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.mode == "b"
    assert cfg.items[0].steps == 3


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as exc:
        from_dict(Outer, {"inner": {"lrr": 1}})
    msg = str(exc.value)
    assert "inner.lrr" in msg and "lr" in msg and "steps" in msg and "mode" in msg


@pytest.mark.parametrize(
    "data, key",
    [
        ({"inner": {"steps": 1.5}}, "inner.steps"),
        ({"inner": {"steps": True}}, "inner.steps"),
        ({"flag": "yes"}, "flag"),
        ({"inner": {"mode": "c"}}, "inner.mode"),
        ({"name": 3}, "name"),
        ({"inner": {"tags": "abc"}}, "inner.tags"),
    ],
)
def test_wrong_type_names_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(Outer, data)


def test_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: base\ninner:\n  lr: 0.5\n")
    cfg = load_config(Outer, p, ["inner.steps=7", "flag=true", "inner.tags=[u, v]", "inner.path=null"])
    assert cfg.name == "base" and cfg.inner.lr == 0.5 and cfg.inner.steps == 7 and cfg.flag is True
    assert cfg.inner.tags == ("u", "v") and cfg.inner.path is None
    with pytest.raises(ConfigError, match="nope"):
        load_config(Outer, p, ["inner.nope=1"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match=r"key.sub=value"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="empty"):
        parse_override("a..b=1")
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_roundtrip(tmp_path):
    cfg = from_dict(Outer, {"inner": {"tags": ["t"]}, "items": [{"lr": 2}]})
    save_config(cfg, tmp_path / "out" / "cfg.yaml")
    again = load_config(Outer, tmp_path / "out" / "cfg.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml"):
        load_config(Outer, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, lst)


def test_override_list_items():
    data = {"items": [{"steps": 1}, {"steps": 2}]}
    out = apply_overrides(data, ["items.1.steps=5"])
    assert out["items"][1]["steps"] == 5 and data["items"][1]["steps"] == 2
    with pytest.raises(ConfigError, match=r"expected an index 0..1"):
        apply_overrides(data, ["items.2.steps=5"])


def test_non_utf8_config_file_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: 'Müller'\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    message = str(info.value)
    assert f"Config file {path} is not UTF-8 text (byte 0xfc at offset 8)" in message and "\n" not in message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused_with_the_key(value):
    with pytest.raises(ConfigError, match=r"Config key 'inner.lr': expected a finite number, found"):
        load_config(Outer, None, [f"inner.lr={value}"])


def test_an_override_that_replaces_an_earlier_one_is_refused() -> None:
    data = {"stages": [{"method": "a", "options": {}}]}
    ok = apply_overrides(data, ["stages=[{method: b}, {method: c}]", "stages.1.options.x=1"])
    assert ok["stages"][1] == {"method": "c", "options": {"x": 1}}
    with pytest.raises(ConfigError, match=r"replaces the whole of 'stages'.*'stages.0.options.x=1'.*first"):
        apply_overrides(data, ["stages.0.options.x=1", "stages=[{method: b}]"])
    # the same key twice is a plain replacement, not an error
    assert apply_overrides(data, ["stages.0.method=x", "stages.0.method=y"])["stages"][0]["method"] == "y"
