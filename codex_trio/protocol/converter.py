"""The one cattrs converter: snake_case attrs fields <-> camelCase wire keys.

Rules, matching what the reference's serde derives produce:
* a field's wire name is its camelCase name, or `metadata["wire"]` when the wire is not camelCase;
* a field declared with `omittable()` is left out when it is None (serde's `skip_serializing_if`);
  other None fields are sent as `null`;
* unknown keys are ignored; primitives are strict (no `5` for a string, no `"1"` for an int);
* structuring errors become serde-like texts ("missing field `path`"), which the dispatcher
  prefixes with "Invalid request: ".

The converter is built on first use (`get_converter`): importing cattrs and building it is a
large share of a start-up that only answers `initialize`. Protocol modules register their
hand-written hooks with `register_structure_hook` / `register_unstructure_hook`, which keeps
them until the converter exists; a type whose hook is registered that way is (un)structured
by it directly, without building the converter (`initialize` takes that path).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin

import attrs

if TYPE_CHECKING:
    import cattrs

T = TypeVar("T")

OMIT = "codex_trio.omit"
WIRE = "codex_trio.wire"


def omittable(default: Any = None, *, wire: str | None = None) -> Any:
    """An optional field that is left off the wire when it is None."""
    metadata: dict[str, Any] = {OMIT: True}
    if wire is not None:
        metadata[WIRE] = wire
    return attrs.field(default=default, metadata=metadata)


def wire(name: str, default: Any = attrs.NOTHING) -> Any:
    """A field whose wire key is not its camelCase name."""
    return attrs.field(default=default, metadata={WIRE: name})


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def wire_name(field: attrs.Attribute[Any]) -> str:
    return str(field.metadata.get(WIRE) or camel(field.name))


class WireError(Exception):
    """Params that do not deserialize; the text is serde's wording without the prefix."""


def strict(kind: type, label: str) -> Callable[[Any, type], Any]:
    """A structure hook accepting exactly `kind` (no bool for a number, an int for a float)."""

    def structure(value: Any, _: type) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise WireError(f"invalid type: boolean `{str(value).lower()}`, expected {label}")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise WireError(f"invalid type: {describe(value)}, expected {label}")
        return value

    return structure


def describe(value: Any) -> str:
    """How serde names a JSON value in its `invalid type` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def expected_variants(names: Sequence[Any]) -> str:
    """serde's list of the variants it wanted: one, two joined by `or`, or `one of` a list."""
    quoted = [f"`{name}`" for name in names]
    if len(quoted) == 1:
        return f"expected {quoted[0]}"
    if len(quoted) == 2:
        return f"expected {quoted[0]} or {quoted[1]}"
    return "expected one of " + ", ".join(quoted)


def _is_literal(tp: Any) -> bool:
    origin: object = get_origin(tp)
    return origin is Literal


def _make_converter() -> cattrs.Converter:
    """A converter with the generic rules only (no hooks of `register_*_hook`)."""
    import cattrs
    from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    def _is_list(tp: Any) -> bool:
        return is_sequence(tp) and get_origin(tp) is not tuple and tp is not str

    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)
    conv.register_structure_hook(str, strict(str, "a string"))
    conv.register_structure_hook(bool, strict(bool, "a boolean"))
    conv.register_structure_hook(int, strict(int, "i64"))
    conv.register_structure_hook(float, strict(float, "f64"))
    conv.register_structure_hook(Any, lambda value, _: value)

    def literal_hook(tp: Any) -> Callable[[Any, type], Any]:
        allowed = get_args(tp)
        expected = expected_variants(allowed)

        def structure(value: Any, _: type) -> Any:
            if value not in allowed or type(value) is not type(allowed[0]):
                if isinstance(value, str):
                    raise WireError(f"unknown variant `{value}`, {expected}")
                raise WireError(f"invalid type: {describe(value)}, {expected}")
            return value

        return structure

    conv.register_structure_hook_factory(_is_literal, literal_hook)

    # cattrs would take any iterable as a list (a string becomes its characters) and fail
    # with a TypeError on a list where a map belongs: serde refuses both with a clear text.
    def sequence_hook(tp: Any) -> Callable[[Any, type], Any]:
        inner = list_structure_factory(tp, conv)

        def structure(value: Any, _: type) -> Any:
            if not isinstance(value, list):
                raise WireError(f"invalid type: {describe(value)}, expected a sequence")
            return inner(value, tp)

        return structure

    def mapping_hook(tp: Any) -> Callable[[Any, type], Any]:
        inner = mapping_structure_factory(tp, conv)

        def structure(value: Any, _: type) -> Any:
            if not isinstance(value, dict):
                raise WireError(f"invalid type: {describe(value)}, expected a map")
            return inner(value, tp)

        return structure

    conv.register_structure_hook_factory(_is_list, sequence_hook)
    conv.register_structure_hook_factory(is_mapping, mapping_hook)

    def enum_hook(tp: type[enum.Enum]) -> Callable[[Any, type], Any]:
        values = {member.value: member for member in tp}
        expected = expected_variants(list(values))

        def structure(value: Any, _: type) -> Any:
            try:
                return values[value]
            except (KeyError, TypeError):
                raise WireError(f"unknown variant `{value}`, {expected}") from None

        return structure

    conv.register_structure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), enum_hook
    )
    conv.register_unstructure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda _: lambda member: member.value
    )

    def structure_attrs(cls: type[Any]) -> Callable[[Any, type], Any]:
        fields = attrs.fields(cls)
        inner = make_dict_structure_fn(
            cls,
            conv,
            **{f.name: override(rename=wire_name(f)) for f in fields},  # type: ignore[arg-type]
        )
        required = [wire_name(f) for f in fields if f.default is attrs.NOTHING]

        def structure(value: Any, _: type) -> Any:
            if not isinstance(value, dict):
                raise WireError(f"invalid type: {describe(value)}, expected struct {cls.__name__}")
            for key in required:
                if key not in value:
                    raise WireError(f"missing field `{key}`")
            return inner(value, cls)

        return structure

    def unstructure_attrs(cls: type[Any]) -> Callable[[Any], Any]:
        return make_dict_unstructure_fn(
            cls,
            conv,
            **{  # type: ignore[arg-type]
                f.name: override(rename=wire_name(f), omit_if_default=bool(f.metadata.get(OMIT)))
                for f in attrs.fields(cls)
            },
        )

    conv.register_structure_hook_factory(attrs.has, structure_attrs)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_attrs)
    return conv


StructureHook = Callable[[Any, Any], Any]
UnstructureHook = Callable[[Any], Any]

_converter: cattrs.Converter | None = None
#: families are imported in worker threads (so are the protocol modules that register hooks)
#: while the loop may build the converter: building and registering hold this lock.
_lock = threading.Lock()
#: hand-written hooks by exact type, in registration order; applied to the converter when
#: it is built (and at once if it exists).
_structure_hooks: dict[Any, StructureHook] = {}
_unstructure_hooks: dict[Any, UnstructureHook] = {}


def get_converter() -> cattrs.Converter:
    """The one converter, built (cattrs imported) on first use, with every registered hook."""
    global _converter
    if _converter is None:
        with _lock:
            if _converter is None:
                conv = _make_converter()
                for tp, hook in _structure_hooks.items():
                    conv.register_structure_hook(tp, hook)
                for tp, unhook in _unstructure_hooks.items():
                    conv.register_unstructure_hook(tp, unhook)
                _converter = conv
    return _converter


def register_structure_hook(tp: Any, hook: StructureHook) -> None:
    """`hook(value, tp)` structures `tp` (raising WireError with serde's wording)."""
    with _lock:
        _structure_hooks[tp] = hook
        if _converter is not None:
            _converter.register_structure_hook(tp, hook)


def register_unstructure_hook(tp: Any, hook: UnstructureHook) -> None:
    """`hook(value)` unstructures instances of exactly `tp`."""
    with _lock:
        _unstructure_hooks[tp] = hook
        if _converter is not None:
            _converter.register_unstructure_hook(tp, hook)


def structure(value: Any, cls: type[T]) -> T:
    """Wire JSON -> a protocol type; raises WireError with serde's wording."""
    hook = _structure_hooks.get(cls)
    try:
        if hook is not None:
            return hook(value, cls)  # type: ignore[no-any-return]
        return get_converter().structure(value, cls)
    except WireError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise WireError(str(exc)) from exc
    except Exception as exc:
        import cattrs

        if isinstance(exc, cattrs.BaseValidationError):
            raise WireError(_first_leaf(exc)) from exc
        raise


def _first_leaf(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc)


def unstructure(value: Any) -> Any:
    """A protocol type -> plain JSON-ready values."""
    hook = _unstructure_hooks.get(type(value))
    if hook is not None:
        return hook(value)
    return get_converter().unstructure(value)
