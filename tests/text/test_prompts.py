"""Tests of the class prompts (tcsa_uda.text.prompts)."""

from pathlib import Path

import pytest

from tcsa_uda.data.contract import DatasetSpec, DomainSpec
from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.text.prompts import DEFAULT_TEMPLATE, build_prompts, validate_template


def make_spec() -> DatasetSpec:
    """Two domains, three classes; only the myocardium has a long description."""
    return DatasetSpec(
        name="tiny-heart",
        labels={"background": 0, "myocardium": 1, "left ventricle blood cavity": 2},
        domains={
            "CT": DomainSpec(name="CT", modality="computed tomography", cases=()),
            "MR": DomainSpec(name="MR", modality="magnetic resonance imaging", cases=()),
        },
        root=Path("tiny-heart"),
        class_descriptions={"myocardium": "muscular wall of the left ventricle"},
    )


def test_default_template_gives_one_prompt_per_class_and_domain_background_included():
    assert DEFAULT_TEMPLATE == "A {modality} of a {class}."
    prompts = build_prompts(make_spec())
    assert prompts == {
        "CT": [
            "A computed tomography of a background.",
            "A computed tomography of a myocardium.",
            "A computed tomography of a left ventricle blood cavity.",
        ],
        "MR": [
            "A magnetic resonance imaging of a background.",
            "A magnetic resonance imaging of a myocardium.",
            "A magnetic resonance imaging of a left ventricle blood cavity.",
        ],
    }


def test_descriptions_replace_names_and_fall_back_to_the_name():
    prompts = build_prompts(make_spec(), template="{class} ({modality})", use_descriptions=True, domains=["MR"])
    assert prompts == {
        "MR": [
            "background (magnetic resonance imaging)",
            "muscular wall of the left ventricle (magnetic resonance imaging)",
            "left ventricle blood cavity (magnetic resonance imaging)",
        ]
    }


def test_template_without_modality_and_literal_braces():
    prompts = build_prompts(make_spec(), template="{{organ}}: {class}")
    assert prompts["CT"][1] == "{organ}: myocardium"
    assert prompts["CT"] == prompts["MR"]


def test_domain_order_follows_the_argument():
    assert list(build_prompts(make_spec(), domains=["MR", "CT"])) == ["MR", "CT"]


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("A {modality} of a {organ}.", "found '{organ}'"),
        ("A {} scan of a {class}", "positional field"),
        ("A {modality} scan.", "expected a {class} placeholder"),
        ("A {class scan", "balanced braces"),
        ("A {class!r}.", "conversion or format spec"),
        ("A {class:>20}.", "conversion or format spec"),
        ("A {class.upper}.", "found '{class.upper}'"),
    ],
)
def test_bad_template_is_a_config_error_naming_the_template(template, fragment):
    with pytest.raises(ConfigError) as info:
        validate_template(template)
    assert fragment in str(info.value)
    assert repr(template) in str(info.value)
    with pytest.raises(ConfigError):
        build_prompts(make_spec(), template=template)


def test_bad_domains():
    with pytest.raises(DatasetError, match="no domain 'PET'"):
        build_prompts(make_spec(), domains=["PET"])
    with pytest.raises(ConfigError, match="at least one"):
        build_prompts(make_spec(), domains=[])
    with pytest.raises(ConfigError, match="distinct"):
        build_prompts(make_spec(), domains=["CT", "CT"])
