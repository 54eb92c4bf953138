"""``compile=`` on ``occfeat.load`` / ``create_model`` / ``finetune``: compiled outputs match eager ones, state dicts
keep their keys, a backend that cannot run here falls back to eager with a warning, an unknown one is a ``ConfigError``.

Inductor on CPU compiles C++ kernels: a cold compile of a tiny network takes 60-90 s on 2 cores (about 10 s with a
warm ``/tmp/torchinductor_*`` cache), so inductor runs here on BEVFormer only (SimpleBEV's full-size inductor output
is checked by ``bench/deploy.py``); the others use the ``aot_eager`` backend, which runs the same Dynamo capture and
AOT autograd without generating code, on both families.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import occfeat
from occfeat.errors import ConfigError
from occfeat.models.compile import compile_model, compile_options, is_compiled

from .conftest import make_batch

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["simplebev-tiny", "bevformer-tiny"]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Compiled code and graph-break counters of one test do not leak into the next."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def assert_outputs_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name, reference in expected.items():
        scale = reference.abs().max().item()  # tolerance relative to the output's scale
        torch.testing.assert_close(got[name], reference, rtol=1e-4, atol=1e-4 * scale, msg=name)


def eager_and_compiled(arch: str, option) -> tuple[dict, dict, torch.nn.Module]:
    model = occfeat.create_model(arch).eval()
    batch = make_batch(model.config.image_size)
    with torch.no_grad():
        expected = model(**batch)
        compile_model(model, option)
        got = model(**batch)
    return expected, got, model


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bevformer-tiny"])  # the family with custom autograd functions on CPU; SimpleBEV's
def test_inductor_on_cpu_matches_eager(arch):           # inductor run (90 s) is bench/deploy.py's, aot_eager's below
    expected, got, model = eager_and_compiled(arch, True)
    assert is_compiled(model)
    assert_outputs_close(got, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_aot_eager_matches_eager(arch):
    expected, got, model = eager_and_compiled(arch, {"backend": "aot_eager", "dynamic": False})
    assert is_compiled(model)
    assert_outputs_close(got, expected)


def test_options_name_a_backend_or_torch_compile_arguments():
    assert compile_options(False) is None and compile_options(None) is None
    assert compile_options(True) == {"backend": "inductor"}
    assert compile_options("aot_eager") == {"backend": "aot_eager"}
    assert compile_options({"dynamic": False}) == {"backend": "inductor", "dynamic": False}


@pytest.mark.parametrize("option", ["inductr", {"backend": "no-such-backend"}, {"fullgrahp": True}, 3])
def test_an_unknown_backend_or_argument_is_a_config_error(option):
    with pytest.raises(ConfigError, match="compile"):
        occfeat.create_model("simplebev-tiny", compile=option)
    with pytest.raises(ConfigError, match="compile"):  # before building anything
        occfeat.load("simplebev-tiny", pretrained=False, compile=option)


def test_without_a_cpp_compiler_inductor_warns_and_the_model_runs_eagerly(monkeypatch):
    from torch._inductor import cpp_builder, exc

    def no_compiler() -> str:
        raise exc.InvalidCxxCompiler()

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    model = occfeat.create_model("simplebev-tiny").eval()
    batch = make_batch(model.config.image_size)
    with torch.no_grad():
        expected = model(**batch)
        with pytest.warns(RuntimeWarning, match="no working C\\+\\+ compiler.*runs eagerly"):
            compile_model(model, True)
        assert not is_compiled(model)
        assert_outputs_close(model(**batch), expected)


def test_a_backend_failing_on_the_first_call_warns_and_falls_back_to_eager():
    def broken_backend(graph, example_inputs):
        raise RuntimeError("the toolchain is broken")

    model = occfeat.create_model("simplebev-tiny").eval()
    batch = make_batch(model.config.image_size)
    with torch.no_grad():
        expected = model(**batch)
        compile_model(model, {"backend": broken_backend})
        with pytest.warns(RuntimeWarning, match="compiled call failed in the backend.*runs eagerly"):
            got = model(**batch)
        assert not is_compiled(model)
        assert_outputs_close(got, expected)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once: later calls are plain eager calls
            model(**batch)


def test_a_compiled_model_keeps_its_state_dict_keys_and_round_trips(tmp_path):
    eager = occfeat.create_model("simplebev-tiny")
    compiled = occfeat.create_model("simplebev-tiny", compile="aot_eager")
    assert isinstance(compiled, occfeat.BEVModel) and is_compiled(compiled)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod." in key for key in compiled.state_dict())
    occfeat.save_pretrained(compiled, tmp_path / "weights")
    loaded = occfeat.load(f"local-dir:{tmp_path / 'weights'}", compile="aot_eager")
    assert loaded.load_report.clean and is_compiled(loaded)
    state = compiled.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in loaded.state_dict().items())
    # a torch.compile wrapper's prefixed keys load too (the zoo strips ``_orig_mod.``)
    from safetensors.torch import save_file

    wrapped = {k: v.contiguous() for k, v in torch.compile(eager).state_dict().items()}
    assert all(key.startswith("_orig_mod.") for key in wrapped)
    save_file(wrapped, str(tmp_path / "wrapped.safetensors"))
    from_wrapped = occfeat.load("simplebev-tiny", pretrained=False, checkpoint=tmp_path / "wrapped.safetensors")
    assert from_wrapped.load_report.clean


def test_load_with_compile_true_returns_the_compiled_bev_model():
    model = occfeat.load("simplebev-tiny", pretrained=False, compile=True)
    assert isinstance(model, occfeat.BEVModel) and is_compiled(model)
    assert model.config.arch == "simplebev-tiny" and model.load_report is not None


def test_finetune_with_compile_records_it_and_trains(synthetic_world, tmp_path):
    from occfeat.finetune.training import finetune

    small = dict(image_size=(64, 128), grid={"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0},
                 dropout=0.0)
    result = finetune(
        "simplebev-tiny", dataroot=synthetic_world.dataroot, version=synthetic_world.version, out_dir=tmp_path / "run",
        train_split="all", val_split="all", count=2, recipe="cpu-tiny", max_steps=2, val_samples=1, device="cpu",
        progress=False, recipe_overrides=dict(eval_every=10**6, batch_size=2), load_kwargs=small,
        compile={"backend": "aot_eager"},
    )
    assert is_compiled(result.model) and result.steps == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["compile"] == {"backend": "aot_eager"}
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())


@pytest.mark.parametrize("verb", ["finetune", "pretrain"])
def test_cli_compile_flag_takes_an_optional_backend(verb):
    from occfeat.cli import build_parser

    common = [verb, "simplebev-tiny", "--dataroot", "d", "--out", "o"]
    parse = build_parser(verb).parse_args
    assert parse(common).compile is False
    assert parse([*common, "--compile"]).compile is True
    assert parse([*common, "--compile", "aot_eager"]).compile == "aot_eager"
