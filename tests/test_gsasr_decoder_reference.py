"""GSASR's forward and gradients equal those recorded from an earlier implementation (float32 rounding).

The decoder's forward is optimised (window order, reassociated scale attention, chunked heads); these
cases, recorded by ``tests/fixtures/make_gsasr_decoder_reference.py`` from the revision named in each
file (its options in that revision's names, mapped by ``recorded_options``), cover every shift option
combination on both kinds of GSASR networks (``GSASR``, ``GSASROfficial``), the padding / canvas / box
options, ``feature_queries`` and ``lr_color_residual``, GSASRRoPE (the enhanced decoder, and
``GSASRRoPEOfficial``) with its options, and the state dict layouts.

They were recorded before the Gaussians of the decoder's window padding were kept (issue 26: the right and
bottom edges of images whose sides are not window multiples): :func:`as_recorded` drops those Gaussians
again, so the decoder's math is still compared exactly; the padding's Gaussians are tested in
``test_gsasr_arch.py``.
"""
from pathlib import Path

import pytest
import torch

import gsasr_plugin  # noqa: F401
from basicsr.utils.registry import ARCH_REGISTRY
from recorded_options import current_options

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
REFERENCES = {family: (torch.load(FIXTURES / f'{family}_decoder_reference.pt'),
                       torch.load(FIXTURES / f'{family}_decoder_reference_grads.pt')['grads'])
              for family in ('gsasr', 'gsasr_rope')}
CASES = [(family, name) for family, (reference, _) in REFERENCES.items() for name in sorted(reference['cases'])]
GRAD_CASES = [(family, name) for family, (_, grads) in REFERENCES.items() for name in sorted(grads)]


def unpack(packed):
    sizes = [int(torch.Size(shape).numel()) for shape in packed['shapes']]
    parts = packed['flat'].float().split(sizes)
    return {name: part.view(shape) for name, part, shape in zip(packed['names'], parts, packed['shapes'])}


def build(reference, case) -> torch.nn.Module:
    network_type, options = current_options(reference.get('type', 'GSASR'),
                                            {**reference['nets'][case['net']]['options'], **case['options']})
    net = ARCH_REGISTRY.get(network_type)(**options)
    state = unpack(reference['nets'][case['net']]['state_dict'])
    ours = net.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    return net


def as_recorded(net, field):
    """``field`` without the Gaussians of the decoder's window padding (beyond the image's right / bottom edge),
    as the references were recorded; fields of the official padding (``pad_input_to``) are the padded image's."""
    from gsasr_plugin.archs.gaussian_field import select_gaussians
    side, k = net.gaussians_per_side, net.window_size
    rows, cols = (n * side for n in field.lr_size)
    padded_cols = -(-field.lr_size[1] // k) * k * side
    if rows * padded_cols == field.num_gaussians and cols == padded_cols:
        return field
    index = (torch.arange(rows)[:, None] * padded_cols + torch.arange(cols)[None]).flatten()
    return select_gaussians(field, index)


def _close(name, actual, expected, rtol, atol=0.0):
    """Max error within ``rtol`` of the tensor's largest magnitude (at least 1) plus ``atol``."""
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rtol * max(1.0, scale) + atol, f'{name}: max abs error {err:.3g} (max |value| {scale:.3g})'


@pytest.mark.parametrize('family, name', CASES)
def test_forward_matches_reference(family, name):
    reference = REFERENCES[family][0]
    case = reference['cases'][name]
    net = build(reference, case).eval()
    inputs = reference['inputs'][case['input']]
    expected = unpack(case['outputs'])
    with torch.no_grad():
        field = as_recorded(net, net.encode(inputs['lq'], inputs['scale']))
        image = net.render(field, case['out_size'])
    assert field.canvas_size == case['canvas_size']
    for key in ('means', 'sigmas', 'rhos', 'colors'):
        assert getattr(field, key).shape == expected[key].shape
        _close(key, getattr(field, key), expected[key], 2e-5)
    if 'image' in expected:
        assert image.shape == expected['image'].shape
        _close('image', image, expected['image'], 2e-5)


@pytest.mark.parametrize('family, name', GRAD_CASES)
def test_gradients_match_reference(family, name):
    reference, grads = REFERENCES[family]
    case = reference['cases'][name]
    net = build(reference, case).train()
    inputs = reference['inputs'][case['input']]
    lq = inputs['lq'].clone().requires_grad_(True)
    image = net.render(as_recorded(net, net.encode(lq, inputs['scale'], out_size=case['out_size'])), case['out_size'])
    _close('image', image.detach(), unpack(case['outputs'])['image'], 2e-5)
    target = torch.rand(image.shape, generator=torch.Generator().manual_seed(11))
    (image - target).abs().mean().backward()
    expected = unpack(grads[name])
    actual = {n: p.grad for n, p in net.named_parameters()}
    actual['<lq>'] = lq.grad
    assert set(actual) == set(expected)
    for key, grad in expected.items():
        assert actual[key] is not None, f'{key}: no gradient'
        # Relative to the largest entry of each gradient (they span orders of magnitude).
        _close(key, actual[key] / max(grad.abs().max().item(), 1e-6), grad / max(grad.abs().max().item(), 1e-6),
               1e-4, 1e-7)
