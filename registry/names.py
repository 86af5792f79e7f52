"""Parsing and validation of registry names: `ns/name` or `name`, optional `@N` / `@latest`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidName

_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_PART = 64
# Names become folder names; these are unusable as file names on Windows (with any extension).
_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}


@dataclass(frozen=True)
class Name:
    """A parsed name; `version` is an int, "latest", or None (meaning latest)."""

    namespace: str | None
    name: str
    version: int | str | None = None

    @property
    def full(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.namespace, self.name) if self.namespace else (self.name,)

    def __str__(self) -> str:
        return self.full if self.version in (None, "latest") else f"{self.full}@{self.version}"


_RULE = "use 'name' or 'namespace/name' with lowercase letters, digits, '.', '_' or '-' (e.g. calligraphy/mifu)"


def _check_part(part: str, text: str) -> None:
    if not part:
        raise InvalidName(f"invalid name {text!r}: empty part; {_RULE}")
    if len(part) > MAX_PART:
        raise InvalidName(f"invalid name {text!r}: {part[:20]!r}… is longer than {MAX_PART} characters")
    if not _PART.fullmatch(part):
        raise InvalidName(f"invalid name {text!r}: {part!r} is not allowed; {_RULE}")
    if part.endswith("."):
        raise InvalidName(f"invalid name {text!r}: a part may not end with '.'; {_RULE}")
    if part.split(".")[0] in _RESERVED:
        raise InvalidName(f"invalid name {text!r}: {part!r} is a reserved device name on Windows; choose another")


def parse_name(text: str, *, allow_version: bool = True) -> Name:
    """Parse and validate `ns/name[@N|@latest]`; raises InvalidName with the rule on failure."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidName(f"invalid name {text!r}: empty; {_RULE}")
    base, sep, ver = text.partition("@")
    version: int | str | None = None
    if sep:
        if not allow_version:
            raise InvalidName(f"invalid name {text!r}: a version (@…) is not allowed here")
        if ver == "latest":
            version = "latest"
        elif ver.isdigit() and ver.isascii() and int(ver) >= 1:
            version = int(ver)
        else:
            raise InvalidName(f"invalid version in {text!r}: use @N with N >= 1, or @latest")
    parts = base.split("/")
    if any(not p for p in parts):
        raise InvalidName(f"invalid name {text!r}: empty part; {_RULE}")
    if len(parts) > 2:
        raise InvalidName(f"invalid name {text!r}: at most one '/'; {_RULE}")
    for part in parts:
        _check_part(part, text)
    if len(parts) == 2:
        return Name(parts[0], parts[1], version)
    return Name(None, parts[0], version)


# ---------------------------------------------------------------- adapter specs: name[@v][=weight]

# What a command line argument must look like to be taken as an adapter spec rather than the
# prompt: no space, and before the "=" only characters a name could be written with (any case, so
# that `Anime=0.5` is refused with the naming rule instead of silently becoming the prompt).
_SPEC_SHAPE = re.compile(r"[\w.@/-]+=\S*")


@dataclass(frozen=True)
class AdapterSpec:
    """`name[@N|@latest][=weight]` parsed; `weight` is None when no `=weight` was given."""

    name: Name
    weight: float | None = None

    def __str__(self) -> str:
        return str(self.name) if self.weight is None else f"{self.name}={self.weight:g}"


def parse_weight(text, name: str) -> float:
    """A finite number; raises InvalidName naming the adapter and the weight otherwise."""
    try:
        value = float(text.strip() if isinstance(text, str) else text)
    except (TypeError, ValueError):
        raise InvalidName(f"the weight of {name} must be a number, not {text!r} (e.g. {name}=0.5)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidName(f"the weight of {name} must be a finite number, not {text!r}")
    return value


def parse_spec(text: str) -> AdapterSpec:
    """Parse `name[@N|@latest][=weight]`; the name by `parse_name`'s rule, the weight a finite number."""
    if not isinstance(text, str):
        raise InvalidName(f"invalid adapter {text!r}: use NAME[@V][=WEIGHT], e.g. anime@2=0.5")
    name_text, sep, weight = text.partition("=")
    name = parse_name(name_text)
    return AdapterSpec(name, parse_weight(weight, name_text) if sep else None)


def is_spec(text: str) -> bool:
    """Whether a command-line argument is meant as NAME[@V]=WEIGHT (then `parse_spec` checks it)
    rather than as the prompt."""
    return isinstance(text, str) and _SPEC_SHAPE.fullmatch(text) is not None


def split_specs(items) -> tuple[list[AdapterSpec], list[str]]:
    """Arguments like `anime=0.5 ink@2=0.5 "a cat"` as (parsed specs, the other arguments)."""
    specs = [parse_spec(i) for i in items if is_spec(i)]
    return specs, [i for i in items if not is_spec(i)]
