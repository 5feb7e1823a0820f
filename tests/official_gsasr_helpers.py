"""What the tests of the official GSASR models share: the fixtures made by the official code (paper models:
``tests/fixtures/make_official_gsasr.py``; enhanced / ultra: ``make_gsasr_rope_fixtures.py``) and the official
kernel's inputs in our units."""
from pathlib import Path
from typing import Mapping

import torch

from basicsr.archs import build_network
from gsasr_plugin.official.gsasr import convert_official_gsasr
from gsasr_plugin.checkpoint import load_into
from recorded_options import current_network_g

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'official_gsasr'
# fixture family -> official encoder class, for the paper decoder (Fea2GS) and the enhanced one (Fea2GS_ROPE_AMP)
PAPER_FAMILIES = {'edsr_paper': 'EDSRNOUP', 'rdn_paper': 'RDNNOUP', 'swinir_paper': 'SwinIRNOUP'}
ENHANCED_FAMILIES = {'edsr_enhanced': 'EDSRNOUP', 'hatl_ultra': 'HATNOUP_ROPE_AMP'}


def reference(family: str) -> dict:
    return torch.load(FIXTURES / family / 'reference.pth', weights_only=True)


def official_files(family: str):
    return [FIXTURES / family / 'encoder.pth', FIXTURES / family / 'decoder.pth']


def official_net(family: str, **overrides):
    """(our network built from the fixture's network_g (in today's names, with ``overrides``) holding its converted
    weights, the reference)."""
    ref = reference(family)
    net = build_network(dict(current_network_g(ref['network_g']), **overrides)).eval()
    if family in PAPER_FAMILIES:
        encoder, decoder = PAPER_FAMILIES[family], 'Fea2GS'
    else:
        encoder, decoder = ENHANCED_FAMILIES[family], 'Fea2GS_ROPE_AMP'
    load_into(net, convert_official_gsasr(official_files(family), encoder, decoder), family)
    return net, ref


def cases(families: Mapping[str, str]):
    return [(family, index) for family in families for index in range(len(reference(family)['cases']))]


def kernel_gaussians_in_lr_units(case):
    """The official kernel's inputs (canvas units: pixel i at 2 i / (n - 1) - 1) as our LR-unit Gaussians."""
    (hc, wc), (hp, wp) = case['canvas'], case['padded_size']
    coords, sigmas = case['kernel_coords'].double(), case['kernel_sigmas'].double()
    means = torch.stack([((coords[:, 0] + 1) * (wc - 1) / 2 + 0.5) * wp / wc,
                         ((coords[:, 1] + 1) * (hc - 1) / 2 + 0.5) * hp / hc], dim=-1)
    stds = torch.stack([sigmas[:, 0] * (wc - 1) / 2 * wp / wc, sigmas[:, 1] * (hc - 1) / 2 * hp / hc], dim=-1)
    return means, stds, sigmas[:, 2], case['kernel_colors'].double()


def gaussian_error(field, case) -> float:
    """The largest difference between ``field``'s Gaussians (image 0) and the official kernel's inputs."""
    means, stds, rhos, colors = kernel_gaussians_in_lr_units(case)
    return max((ours.double() - theirs).abs().max().item() for ours, theirs in (
        (field.means[0], means), (field.sigmas[0], stds), (field.rhos[0], rhos), (field.colors[0], colors)))


def image_error(net, case) -> float:
    """The largest difference between ``net``'s image of the case and the official one (same size asserted)."""
    with torch.no_grad():
        image = net(case['lq'], scale=case['scale'], out_size=case['out_size'])
    assert image.shape[-2:] == case['image'].shape[-2:]
    return (image[0] - case['image']).abs().max().item()
