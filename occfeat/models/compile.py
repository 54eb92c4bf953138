"""``torch.compile`` as a model option: the one place that turns ``compile=...`` (``occfeat.load``,
``occfeat.create_model``, ``finetune``, ``pretrain``, ``--compile``) into a compiled module, or into a warning and the
eager module when the backend cannot run on this machine.

The module is compiled in place (``nn.Module.compile``): it stays the same object, a ``BEVModel`` keeps its
``.config`` and ``.load_report``, and its state-dict keys carry no ``_orig_mod.`` prefix, so checkpoints and
``save_pretrained`` folders of a compiled model load into an eager one and back.

Only ``module(...)`` calls are compiled (``__call__``); other methods (``forward_features``) stay eager, so compile the
module whose call does the work (the pretrainer, not its network, in OccFeat pretraining).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from typing import Any, Callable, TypeVar, Union

import torch
from torch import nn

from ..errors import ConfigError

CompileOption = Union[bool, str, Mapping[str, Any], None]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

DEFAULT_BACKEND = "inductor"
_COMPILE_KWARGS = ("fullgraph", "dynamic", "backend", "mode", "options", "disable")


def compile_options(option: CompileOption) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments of a ``compile=`` option, or None for "do not compile".

    ``False`` / ``None``: none; ``True``: the default backend (inductor); a string: that backend; a dict: the
    ``torch.compile`` arguments themselves (``{"backend": "aot_eager", "dynamic": False}``). Raises ``ConfigError`` for
    an unknown backend name or argument.

    >>> compile_options(True)
    {'backend': 'inductor'}
    >>> compile_options({"backend": "aot_eager", "dynamic": False})
    {'backend': 'aot_eager', 'dynamic': False}
    """
    if option is None or option is False:
        return None
    if option is True:
        options: dict[str, Any] = {"backend": DEFAULT_BACKEND}
    elif isinstance(option, str):
        options = {"backend": option}
    elif isinstance(option, Mapping):
        options = {"backend": DEFAULT_BACKEND, **option}
        unknown = sorted(set(options) - set(_COMPILE_KWARGS))
        if unknown:
            raise ConfigError(f"compile={dict(option)!r}: unknown torch.compile argument(s) {unknown}; expected some "
                              f"of {list(_COMPILE_KWARGS)}.")
    else:
        raise ConfigError(f"compile={option!r}: expected True, False, a backend name (e.g. 'inductor', 'aot_eager') "
                          "or a dict of torch.compile arguments.")
    backend = options["backend"]
    if isinstance(backend, str):
        # exclude_tags=() lists the debugging backends too (aot_eager, eager), which are useful to bisect a problem.
        known = torch._dynamo.list_backends(exclude_tags=())
        if backend not in known:
            close = difflib.get_close_matches(backend, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"compile backend {backend!r} is not a torch.compile backend.{hint} Known backends: "
                              f"{', '.join(known)} (torch._dynamo.list_backends(exclude_tags=())).")
    elif not callable(backend):
        raise ConfigError(f"compile backend {backend!r}: expected a backend name or a callable backend.")
    return options


def describe(option: CompileOption) -> bool | str | dict[str, Any]:
    """A JSON-able record of a ``compile=`` option (what ``run.json`` holds): False, or the arguments used."""
    options = compile_options(option)
    if options is None:
        return False
    return {k: (v if isinstance(v, (bool, int, float, str, type(None), dict)) else repr(v)) for k, v in options.items()}


def missing_requirement(backend: Any, device: torch.device) -> str | None:
    """What ``backend`` lacks to run on ``device`` here, or None when nothing is known to be missing.

    Checked up front: inductor's C++ compiler on CPU (``torch._inductor.cpp_builder.get_cpp_compiler``, which honours
    ``CXX`` and ``torch._inductor.config.cpp.cxx``) and Triton on CUDA; ``cudagraphs`` needs CUDA.
    """
    if backend == "cudagraphs" and device.type != "cuda":
        return f"the cudagraphs backend needs a CUDA device, the model is on {device.type}"
    if backend != "inductor":
        return None
    if device.type == "cpu":
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
        except Exception as error:  # InvalidCxxCompiler, or whatever a broken toolchain raises
            return (f"no working C++ compiler for inductor's CPU kernels ({type(error).__name__}: {error}); install "
                    "g++ (or set CXX)")
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return ("Triton is missing or cannot run on this GPU, and inductor needs it for CUDA kernels; pip install "
                    "triton")
    return None


def _backend_failures() -> tuple[type[BaseException], ...]:
    """The errors a first compiled call raises when the toolchain, not the model, fails."""
    from torch._dynamo import exc as dynamo_exc

    failures: list[type[BaseException]] = [dynamo_exc.BackendCompilerFailed]
    try:
        from torch._inductor import exc as inductor_exc

        failures += [inductor_exc.InvalidCxxCompiler, inductor_exc.CppCompileError]
    except ImportError:  # a torch build without inductor: BackendCompilerFailed covers it
        pass
    return tuple(failures)


def _guarded(module: nn.Module, compiled: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``compiled`` that, should a call fail in the backend (a compiler that `--version` accepts but cannot build,
    a Triton that cannot load), warns once and runs this and every later call eagerly."""
    failures = _backend_failures()

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except failures as error:
            warnings.warn(f"{what}: the compiled call failed in the backend ({type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); the model runs "
                          "eagerly.", RuntimeWarning, stacklevel=2)
            module._compiled_call_impl = None
            return module._call_impl(*args, **kwargs)

    return call


def compile_model(model: ModuleT, option: CompileOption = True, *, device: torch.device | str | None = None) -> ModuleT:
    """``model`` with its calls compiled by ``torch.compile``, in place; returned for chaining.

    Args:
        model: any module (a ``BEVModel``, a pretrainer).
        option: ``True`` (inductor), a backend name, a dict of ``torch.compile`` arguments, or ``False`` / ``None``
            (returned as is).
        device: where the model will run, which picks the checks (a C++ compiler on CPU, Triton on CUDA); by
            default the device of its first parameter.

    An unknown backend or argument raises ``ConfigError``. A backend that cannot run here (no C++ compiler for
    inductor on CPU, no Triton on CUDA, found up front or by the first call) gives a ``RuntimeWarning`` naming what is
    missing, and the model runs eagerly. Data-dependent shapes (SimpleBEV's visible pairs, BEVFormer's camera gather)
    become graph breaks, not errors.

    >>> model = compile_model(occfeat.create_model("simplebev-tiny"), {"backend": "inductor"})  # doctest: +SKIP
    >>> out = model(**batch)  # the first call compiles  # doctest: +SKIP
    """
    options = compile_options(option)
    if options is None:
        return model
    if device is None:
        tensor = next((t for t in (*model.parameters(), *model.buffers())), None)
        device = tensor.device if tensor is not None else torch.device("cpu")
    device = torch.device(device)
    what = f"compile={describe(option)!r} on {device.type}"
    reason = missing_requirement(options["backend"], device)
    if reason is not None:
        warnings.warn(f"{what}: {reason}; the model runs eagerly.", RuntimeWarning, stacklevel=2)
        return model
    model.compile(**options)
    model._compiled_call_impl = _guarded(model, model._compiled_call_impl, what)
    return model


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module``'s calls run compiled (``compile_model`` took effect and no backend failure reverted it)."""
    return getattr(module, "_compiled_call_impl", None) is not None
