"""P-mode gate forms of the 2-D pLSTM: ours (``"split"``) and the authors' (``"complement"``), each against a direct
transcription of its formula, and what tells them apart."""

from __future__ import annotations

import pytest
import torch

from recvision.ops.plstm2d import naive_plstm2d, p_mode_gates
from recvision.ops.plstm2d.gates import P_GATE_FORMS


def _activations(shape=(2, 3, 4, 2), seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    source, mark, direct, orientation = (torch.rand(shape, generator=gen, dtype=torch.float64) for _ in range(4))
    transition = torch.tanh(3 * torch.randn(shape, generator=gen, dtype=torch.float64))
    return source, transition, mark, direct, orientation


def _authors_p_mode(source, transition, mark, direct, orientation) -> dict[str, torch.Tensor]:
    """Transcription of the authors' P-mode gates (ml-jku/plstm, ``pLSTM2DLayerFused.forward``, state-tracking dims
    of 1): ``s_r = o * S``, ``s_d = 1.0 - s_r``, ``t_rl = o * T``, ``t_ru = t_rl``, ``t_dl = 1 - t_rl``,
    ``t_du = 1 - t_rl``, ``m_l = m_u = M``."""
    s_r = orientation * source
    s_d = 1.0 - s_r
    t_rl = orientation * transition
    t_ru = t_rl
    t_dl = 1 - t_rl
    t_du = 1 - t_rl
    return dict(
        source_r=s_r,
        source_d=s_d,
        trans_rl=t_rl,
        trans_ru=t_ru,
        trans_du=t_du,
        trans_dl=t_dl,
        mark_l=mark,
        mark_u=mark,
        direct=direct,
    )


def _split_p_mode(source, transition, mark, direct, orientation) -> dict[str, torch.Tensor]:
    """Transcription of the split form: the right-going edge gets ``o`` of ``S`` and ``T``, the down-going one
    ``1 - o`` of them."""
    return dict(
        source_r=orientation * source,
        source_d=(1 - orientation) * source,
        trans_rl=orientation * transition,
        trans_ru=orientation * transition,
        trans_du=(1 - orientation) * transition,
        trans_dl=(1 - orientation) * transition,
        mark_l=mark,
        mark_u=mark,
        direct=direct,
    )


@pytest.mark.parametrize("form, transcription", [("complement", _authors_p_mode), ("split", _split_p_mode)])
def test_p_mode_gate_form_matches_its_transcription(form, transcription):
    act = _activations()
    gates = p_mode_gates(*act, form=form)
    expected = transcription(*act)
    assert list(gates) == list(expected)
    for name, gate in gates.items():
        torch.testing.assert_close(gate, expected[name], rtol=0, atol=0, msg=name)


def test_split_is_the_default_and_forms_differ_only_on_the_down_edge():
    act = _activations()
    default, split, complement = (
        p_mode_gates(*act),
        p_mode_gates(*act, form="split"),
        p_mode_gates(*act, form="complement"),
    )
    for name in default:
        torch.testing.assert_close(default[name], split[name], rtol=0, atol=0)
    for name in ("source_r", "trans_rl", "trans_ru", "mark_l", "mark_u", "direct"):
        torch.testing.assert_close(split[name], complement[name], rtol=0, atol=0)
    for name in ("source_d", "trans_du", "trans_dl"):
        assert (split[name] - complement[name]).abs().min() > 0, name


def test_split_form_bounds_the_outgoing_transitions_and_complement_does_not():
    """Split: the absolute transitions leaving an incoming edge sum to ``|T| <= 1``. Complement: the transitions
    sum to exactly 1, their absolute values to ``1 + 2 |o T|`` where ``o T < 0``, above 1."""
    act = _activations()
    transition, orientation = act[1], act[4]
    split, complement = p_mode_gates(*act, form="split"), p_mode_gates(*act, form="complement")
    for straight, turn in (("trans_rl", "trans_dl"), ("trans_du", "trans_ru")):
        torch.testing.assert_close(split[straight].abs() + split[turn].abs(), transition.abs())
        torch.testing.assert_close(complement[straight] + complement[turn], torch.ones_like(transition))
    abs_sum = complement["trans_rl"].abs() + complement["trans_dl"].abs()
    negative = orientation * transition < 0
    assert negative.any() and (~negative).any()
    torch.testing.assert_close(abs_sum[negative], 1 + 2 * (orientation * transition).abs()[negative])
    assert abs_sum.max() > 1.5


def test_gate_forms_give_different_op_outputs():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 3, 4, 2, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    act = _activations(shape=(1, 3, 4, 2))
    a = naive_plstm2d(q, k, v, **p_mode_gates(*act, form="split"))
    b = naive_plstm2d(q, k, v, **p_mode_gates(*act, form="complement"))
    assert (a - b).abs().max() > 1e-3


def test_unknown_gate_form_is_rejected():
    assert P_GATE_FORMS == ("split", "complement")
    with pytest.raises(ValueError, match="form"):
        p_mode_gates(*_activations(), form="paper")
