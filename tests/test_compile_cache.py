"""The cold call of a compiled case says whether inductor's caches served it (warm) or not (cold)."""
import torch

from diffperf.measure import cache_use, compile_cache_counters


def test_second_compile_of_the_same_graph_is_served_warm(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # an empty, persistable cache

    def f(x):
        return torch.sin(x) * 2 + 1

    states, phases = [], []
    for _ in range(2):
        torch._dynamo.reset()  # as between two processes: compiled code gone, the cache dir stays
        before = compile_cache_counters()
        torch.compile(f)(torch.randn(8))
        use = cache_use(before, compile_cache_counters())
        assert use["cache_dir"] == str(tmp_path)
        states.append(use["state"])
        phases.append(use["compile_phases_s"])
    assert states == ["cold", "warm"]
    # where the cold call's time went: the compiler's phases, largest first, this call's only
    cold = phases[0]
    assert cold and list(cold.values()) == sorted(cold.values(), reverse=True)
    assert all(0 < v < 600 for v in cold.values())
    assert sum(phases[1].values()) < sum(cold.values())  # the warm call compiled less
    torch._dynamo.reset()


def test_a_call_that_compiles_nothing_says_so():
    before = compile_cache_counters()
    assert cache_use(before, compile_cache_counters())["state"] == "no graph compiled"


def test_graph_breaks_of_a_call_are_counted_with_their_reasons():
    def f(x):
        x = x * 2
        print("a graph break")  # dynamo cannot trace print: two graphs
        return x + 1

    torch._dynamo.reset()
    before = compile_cache_counters()
    torch.compile(f)(torch.randn(4))
    use = cache_use(before, compile_cache_counters())
    assert use["graph_breaks"] == 1 and use["graphs_traced"] == 2
    (reason,) = use["graph_break_reasons"]
    assert "print" in reason and "\n" not in reason
    # a second call of the compiled function traces nothing and breaks nothing more
    before = compile_cache_counters()
    torch.compile(f)(torch.randn(4))
    use = cache_use(before, compile_cache_counters())
    assert use["graph_breaks"] == 0 and use["graph_break_reasons"] == {}
    torch._dynamo.reset()
