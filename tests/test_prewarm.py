"""A shallow copy of a denoiser fills inductor's autotune cache for the full one
(diffperf/shallow.py, tools/prewarm_autotune.py)."""
import pytest
import torch

from diffperf.cli import prewarm as prewarm_autotune
from diffperf.measure import cache_use, compile_cache_counters
from diffperf.shallow import cut_block_stacks


class Block(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.proj = torch.nn.Linear(width, width)

    def forward(self, x):
        return torch.relu(self.proj(x))


class Stack(torch.nn.Module):
    """Two stacks of identical blocks, the second ending in a block of another width (as SD3's
    last block differs), and a head."""

    def __init__(self, depth: int = 4):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(64) for _ in range(depth))
        self.tail = torch.nn.ModuleList([*(Block(64) for _ in range(depth)), torch.nn.Linear(64, 32)])
        self.head = torch.nn.Linear(32, 16)

    def forward(self, x):
        for block in [*self.blocks, *self.tail]:
            x = block(x)
        return self.head(x)


def test_cut_keeps_the_first_block_of_each_kind_in_order():
    torch.manual_seed(0)
    model = Stack()
    first, last = model.tail[0], model.tail[-1]
    assert cut_block_stacks(model) == {"blocks": (4, 1), "tail": (5, 2)}
    assert list(model.tail) == [first, last]
    assert model(torch.randn(3, 64)).shape == (3, 16)  # still runs, same shapes
    assert cut_block_stacks(Stack(), keep=2) == {"blocks": (4, 2), "tail": (5, 3)}


def test_nothing_to_cut_is_an_error_naming_the_lists():
    model = torch.nn.Module()
    model.down = torch.nn.ModuleList([torch.nn.Linear(4, 8), torch.nn.Linear(8, 16)])
    with pytest.raises(ValueError, match=r"down \(2\).*prewarm it with the full model"):
        cut_block_stacks(model)
    with pytest.raises(ValueError, match="keep must be at least 1"):
        cut_block_stacks(Stack(), keep=0)


def _compile_and_count(model: torch.nn.Module) -> dict:
    # the CPU's max-autotune benchmarks its C++ GEMM template against aten only on frozen weights
    torch._dynamo.reset()
    # as a new process: inductor's in-memory caches (autotune choices, cache paths) are gone
    torch._inductor.utils.clear_caches()
    before = compile_cache_counters()
    with torch._inductor.config.patch(freezing=True, max_autotune_gemm_backends="CPP,ATEN"), torch.no_grad():
        torch.compile(model, mode="max-autotune-no-cudagraphs")(torch.randn(32, 64))
    use = cache_use(before, compile_cache_counters())
    torch._dynamo.reset()
    return use


def test_the_full_models_compile_finds_the_shallow_copys_autotune_results(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "prewarmed"))
    shallow = Stack()
    cut_block_stacks(shallow)
    assert _compile_and_count(shallow)["select_algorithm_autotune"] >= 2  # 64x64, 64x32, 32x16
    full = _compile_and_count(Stack())
    # a new graph (the FX graph cache misses), but no GEMM shape left to benchmark
    assert full["state"] == "cold" and full["select_algorithm_autotune"] == 0
    # the control: the same full model on an empty cache benchmarks its shapes
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "empty"))
    assert _compile_and_count(Stack())["select_algorithm_autotune"] >= 2


def test_the_tool_builds_a_case_cuts_it_and_compiles_one_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "prewarm.json"
    try:
        assert prewarm_autotune.main(["--model", "flux-dev", "--recipe", "fp32+compile", "--tier", "cpu",
                                      "--out", str(out)]) == 0
    finally:
        torch._dynamo.reset()
    import json

    summary = json.loads(out.read_text())
    assert summary["blocks_kept"] == {"transformer_blocks": [3, 1], "single_transformer_blocks": [6, 1]}
    assert summary["compile"]["state"] == "cold" and summary["compile"]["graphs_traced"] >= 1
    assert summary["compile"]["cache_dir"] == str(tmp_path / "cache")
    assert json.loads(capsys.readouterr().out) == summary


def test_the_tool_refuses_a_recipe_that_compiles_nothing():
    with pytest.raises(SystemExit, match="compiles nothing"):
        prewarm_autotune.prewarm("flux-dev", "fp32", "cpu", keep=1, steps=1)
