"""Text prompts: one sentence per (domain, class), built from the dataset description.

The TCSA-UDA text branch (arXiv 2511.05782, docs/method.md section Text) describes every class of
every modality with a sentence in the MulModSeg style, ``"A {modality} of a {class}."``, where
``{modality}`` is the domain's ``modality`` phrase of ``dataset.json`` (e.g. "computed
tomography") and ``{class}`` the class name, or its long ``class_descriptions`` entry when asked.
Background (class 0) gets a prompt too, so a domain has ``C`` prompts for ``C`` classes.
"""

from __future__ import annotations

import string

from tcsa_uda.data.contract import DatasetSpec
from tcsa_uda.errors import ConfigError

DEFAULT_TEMPLATE = "A {modality} of a {class}."
TEMPLATE_FIELDS: tuple[str, ...] = ("class", "modality")


def validate_template(template: str) -> None:
    """Check that ``template`` is a prompt template with ``{class}`` and optionally ``{modality}``.

    Args:
        template: a ``str.format`` template; literal braces are written ``{{`` and ``}}``.

    Raises:
        ConfigError: the template is not a string, has unbalanced braces, a positional ``{}``
            field, a field other than ``{class}`` / ``{modality}``, a conversion or format spec,
            or no ``{class}`` field.
    """
    if not isinstance(template, str):
        raise ConfigError(f"text template: expected a string such as {DEFAULT_TEMPLATE!r}, found {template!r}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"text template {template!r}: expected balanced braces around {{class}} / {{modality}} "
            f"(write literal braces as '{{{{' and '}}}}'), found: {exc}"
        ) from exc
    fields: set[str] = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            found = "a positional field '{}'" if name == "" else f"'{{{name}}}'"
            raise ConfigError(
                f"text template {template!r}: expected only the placeholders {{class}} and {{modality}}, found {found}"
            )
        if spec or conversion:
            raise ConfigError(
                f"text template {template!r}: expected plain placeholders {{class}} / {{modality}}, "
                f"found a conversion or format spec in {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}"
            )
        fields.add(name)
    if "class" not in fields:
        raise ConfigError(f"text template {template!r}: expected a {{class}} placeholder, found none")


def format_prompt(template: str, class_text: str, modality: str) -> str:
    """Fill one prompt; ``template`` must have passed :func:`validate_template`."""
    return template.format(**{"class": class_text, "modality": modality})


def build_prompts(
    spec: DatasetSpec,
    template: str = DEFAULT_TEMPLATE,
    use_descriptions: bool = False,
    domains: list[str] | None = None,
) -> dict[str, list[str]]:
    """Prompts for every class of every (selected) domain.

    Args:
        spec: the dataset; its class names (ordered by id, background first) and each domain's
            ``modality`` phrase fill the template.
        template: prompt template with ``{class}`` and optionally ``{modality}``.
        use_descriptions: fill ``{class}`` with ``spec.description(name)`` (the
            ``class_descriptions`` entry, or the name when the class has none).
        domains: domain names to build, in this order; all of ``spec.domains`` when None.

    Returns:
        ``{domain: [prompt of class 0, ..., prompt of class C-1]}`` in the order of ``domains``.

    Raises:
        ConfigError: bad template, or ``domains`` empty or naming a domain twice.
        DatasetError: ``domains`` names a domain the dataset does not have.
    """
    validate_template(template)
    names = list(spec.domains) if domains is None else list(domains)
    if not names:
        raise ConfigError(f"text domains: expected at least one of {', '.join(spec.domains)}, found none")
    if len(set(names)) != len(names):
        raise ConfigError(f"text domains: expected distinct domain names, found {names}")
    out: dict[str, list[str]] = {}
    for dname in names:
        modality = spec.domain(dname).modality.strip()
        out[dname] = [
            format_prompt(template, spec.description(cname) if use_descriptions else cname, modality)
            for cname in spec.class_names
        ]
    return out
