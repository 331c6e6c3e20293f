"""qflash.plan: a call's launches recorded once and replayed with new pointers (no GPU needed:
launches are stand-ins; tests/test_gpu.py replays real kernels against the ordinary path)."""
import pytest
import torch

pytest.importorskip("triton")

from qflash import launcher, plan  # noqa: E402


def record(inputs, constants=()):
    """A stand-in call: a zeroed buffer, a buffer sliced at an offset, launches whose arguments
    are inputs, views of them, those buffers, a constant and ints, some inside tuples."""
    q, k = inputs
    table = constants[0]
    with plan.recording(inputs, constants) as rec:
        amax = plan.empty((3, 4), torch.float32, "cpu", zero=True)
        out = plan.empty((2, 8), torch.float16, "cpu")
        plan.note_launch("quantize", (2, 1, 1), [(q, k.t()), amax[1], table, 7], "cpu")
        plan.note_launch("attend", (4, 1, 1), [q.reshape(-1), out, (amax[2, 1:], 3)], "cpu")
    return rec, out.reshape(16)


def test_replay_binds_new_pointers_and_fresh_buffers(monkeypatch):
    table = torch.arange(5)
    rec, result = record((torch.ones(2, 8), torch.ones(8, 2)), (table,))
    recorded = plan.Plan(rec, result)
    launches = []
    monkeypatch.setattr(launcher, "replay", lambda compiled, grid, args, device: launches.append((compiled, grid, args)))
    q2, k2 = torch.zeros(2, 8), torch.zeros(8, 2)
    out = recorded(q2, k2)
    assert out.shape == (16,) and out.dtype == torch.float16
    (c1, g1, a1), (c2, g2, a2) = launches
    assert (c1, g1, c2, g2) == ("quantize", (2, 1, 1), "attend", (4, 1, 1))
    assert a1[0] == (q2.data_ptr(), k2.data_ptr())
    assert a1[2] is table and a1[3] == 7
    assert a2[0] == q2.data_ptr() and a2[1] == out.data_ptr()
    # amax[1] and amax[2, 1:]: one row of four float32 apart, plus one float32, in the zeroed arena
    assert a2[2][1] == 3 and a2[2][0] - a1[1] == 16 + 4
    for x in (q2, k2, out):  # a fresh arena, not inside any input or the output
        assert not x.data_ptr() <= a1[1] < x.data_ptr() + x.numel() * x.element_size()


def test_unknown_launch_arguments_make_a_call_unplannable():
    q = torch.ones(4)
    with plan.recording((q,)) as rec:
        out = plan.empty(4, torch.float32, "cpu")
        plan.note_launch("k", (1, 1, 1), [q, torch.ones(3), out], "cpu")  # a temporary: stale on replay
    with pytest.raises(plan.Unplannable, match="neither an input, a buffer nor a constant"):
        plan.Plan(rec, out)
    with plan.recording((q,)) as rec:
        out = plan.empty(4, torch.float32, "cpu")
        plan.note_launch("k", (1, 1, 1), [q, out], "cpu")
    with pytest.raises(plan.Unplannable, match="not a whole buffer|not a buffer"):
        plan.Plan(rec, out[1:])


def test_nothing_is_recorded_outside_a_recording():
    plan.note_launch("k", (1, 1, 1), [], "cpu")
    assert plan._active is None
    assert plan.empty(3, torch.int32, "cpu", zero=True).eq(0).all()
