"""GSASRRoPE and the HATRoPE encoder against reference outputs of the official code (tests/fixtures/gsasr_rope).

The fixtures were made by tests/fixtures/make_gsasr_rope_fixtures.py from the official GSASR code (commit in
tests/fixtures/gsasr_rope/README.md) on tiny seeded configurations; the official weights are stored as the
release stores them (``encoder.pth`` / ``decoder.pth``, ``params_ema``). Gaussians are compared as the
official decoder outputs them (9 raw values per Gaussian: sigma logits (height axis first), rho, alpha and
colour logits, mean in [0, 1] of the padded LR image) within 1e-5, float32 on the CPU.
"""
import math
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
import torch.nn.functional as F

import gsasr_plugin  # noqa: F401  (registers archs and encoders)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs import build_encoder
from gsasr_plugin.archs.gsasr_rope_arch import (GSASRRoPE, convert_official_rope_decoder, load_official_gsasr_rope)
from gsasr_plugin.archs.rope_attention import RoPEWindowAttention, apply_rotation, grid_positions, rotation_angles

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'gsasr_rope'
GAUSSIAN_ATOL = 1e-5
# The tiny configurations of make_gsasr_rope_fixtures.py, as our options.
DECODER_OPTIONS = dict(embed_dim=16, num_heads=2, window_size=4, num_injection_blocks=2, num_injection_layers=2,
                       num_blocks=2, num_layers_per_block=2, num_scale_tokens=1, gaussian_density=16,
                       num_upsample_stages=2, max_offset=None)
HAT_OPTIONS = dict(type='HATRoPE', embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4, squeeze_factor=8,
                   drop_path_rate=0.0)
# EDSR family: the decoder is compared on the official encoder's output (stored in each case).
ENCODERS = {'edsr': {'type': 'EDSRBaseline', 'num_feat': 8, 'num_block': 1}, 'hatl': HAT_OPTIONS}
CASES = ['8x12_x2', '8x12_x2.3', '7x9_x3', '7x9_x2.3']


def case(family: str, name: str) -> Dict:
    return torch.load(FIXTURES / f'{family}_{name}.pt', weights_only=True)


def official_state(family: str, part: str) -> Dict[str, torch.Tensor]:
    return torch.load(FIXTURES / family / f'{part}.pth', weights_only=True)['params_ema']


def tiny_net(family: str, **overrides) -> GSASRRoPE:
    return GSASRRoPE(encoder=ENCODERS[family], **{**DECODER_OPTIONS, **overrides}).eval()


def load_decoder_only(net: GSASRRoPE, family: str) -> None:
    """Official decoder weights into ``net`` (every non-encoder key, nothing more)."""
    weights, _ = convert_official_rope_decoder(official_state(family, 'decoder'))
    decoder_keys = {k for k in net.state_dict() if not k.startswith('encoder.')}
    assert set(weights) == decoder_keys
    missing, unexpected = net.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith('encoder.') for k in missing)


def official_layout(net: GSASRRoPE, tokens: torch.Tensor, lr_size: Tuple[int, int]) -> torch.Tensor:
    """Our heads in the official decoder's output layout (N, 9): sigma (height, width), rho, alpha, rgb, mean."""
    flat = tokens.reshape(1, -1, tokens.shape[-1])
    field = net.gaussians_from_tokens(tokens, lr_size)
    mean = field.means[0] / torch.tensor([lr_size[1], lr_size[0]], dtype=torch.float32)
    return torch.cat([net.sigma_head(flat)[0].flip(-1), net.rho_head(flat)[0], net.opacity_head(flat)[0],
                      net.color_head(flat)[0], mean], dim=-1)


def padded(lq: torch.Tensor, multiple: int) -> torch.Tensor:
    """The official inference's padding: reflect at the bottom / right to a multiple."""
    h, w = lq.shape[-2:]
    return F.pad(lq, (0, -w % multiple, 0, -h % multiple), mode='reflect')


@pytest.mark.parametrize('family', ['edsr', 'hatl'])
@pytest.mark.parametrize('name', CASES)
def test_decoder_gaussians_match_official(family, name):
    ref = case(family, name)
    net = tiny_net(family)
    load_decoder_only(net, family)
    features = ref['encoder_output']
    with torch.no_grad():
        tokens = net.decode_tokens(features, (ref['scale'], ref['scale']))
        ours = official_layout(net, tokens, tuple(features.shape[-2:]))
    assert ours.shape == ref['gs_parameters'].shape
    assert (ours - ref['gs_parameters']).abs().max() < GAUSSIAN_ATOL


@pytest.mark.parametrize('name', CASES)
def test_hat_rope_encoder_matches_official(name):
    ref = case('hatl', name)
    encoder = build_encoder({**HAT_OPTIONS, 'pretrained': str(FIXTURES / 'hatl' / 'encoder.pth')}).eval()
    with torch.no_grad():
        features = encoder(padded(ref['lq'], ref['denominator']))
    expected = ref['encoder_output']
    assert (features - expected).abs().max() < 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize('name', CASES)
def test_hatl_pipeline_matches_official(name):
    """Official files by path -> strict load -> padded LR image -> encoder -> decoder -> Gaussians."""
    ref = case('hatl', name)
    net = load_official_gsasr_rope(tiny_net('hatl'), FIXTURES / 'hatl' / 'encoder.pth',
                                   FIXTURES / 'hatl' / 'decoder.pth')
    lq = padded(ref['lq'], ref['denominator'])
    with torch.no_grad():
        tokens = net.decode_tokens(net.encoder(lq), (ref['scale'], ref['scale']))
        ours = official_layout(net, tokens, tuple(lq.shape[-2:]))
    assert (ours - ref['gs_parameters']).abs().max() < GAUSSIAN_ATOL


def test_official_loading_is_strict_and_names_the_problem(tmp_path):
    encoder_file, decoder_file = FIXTURES / 'hatl' / 'encoder.pth', FIXTURES / 'hatl' / 'decoder.pth'
    # A window size the weights were not made with: only the RoPE positions tell.
    with pytest.raises(ValueError, match='RoPE token positions.*window_size'):
        load_official_gsasr_rope(tiny_net('hatl', window_size=2), encoder_file, decoder_file)
    # A decoder with a tensor missing, and one with a key the layout does not know.
    state = official_state('hatl', 'decoder')
    del state['conv_final.bias']
    torch.save({'params_ema': state}, tmp_path / 'decoder.pth')
    with pytest.raises(ValueError, match="missing 'conv_final.bias'"):
        load_official_gsasr_rope(tiny_net('hatl'), encoder_file, tmp_path / 'decoder.pth')
    state = official_state('hatl', 'decoder')
    state['extra_head.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match='extra_head.weight'):
        load_official_gsasr_rope(tiny_net('hatl'), encoder_file, {'params_ema': state})
    # More injection blocks than the checkpoint has.
    with pytest.raises(ValueError, match="missing 'injection.2"):
        load_official_gsasr_rope(tiny_net('hatl', num_injection_blocks=3), encoder_file, decoder_file)
    with pytest.raises(FileNotFoundError, match='decoder'):
        load_official_gsasr_rope(tiny_net('hatl'), encoder_file, tmp_path / 'nope.pth')


def test_scale_input_split_keeps_isotropic_conditioning():
    """The official 1-input scale MLP becomes our 2-input one with half the weight on each input."""
    state = official_state('edsr', 'decoder')
    weights, _ = convert_official_rope_decoder(state)
    w1, w2 = state['scale_mlp.0.weight'].float(), weights['scale_mlp.0.weight'].float()
    assert w2.shape == (w1.shape[0], 2)
    x = torch.tensor([[1 / 2.3]])
    assert torch.equal(x @ w1.T, torch.cat([x, x], dim=1) @ w2.T)


def test_rope_scores_depend_on_offsets_only():
    """Rotated q.k is unchanged when both tokens move by the same offset (what replaces the bias table)."""
    freqs = torch.randn(2, 3, 4)  # 3 heads, head_dim 8
    q, k = torch.randn(1, 3, 1, 8), torch.randn(1, 3, 1, 8)

    def score(pq, pk):
        rq = apply_rotation(q, rotation_angles(freqs, torch.tensor([pq[0]]), torch.tensor([pq[1]])))
        rk = apply_rotation(k, rotation_angles(freqs, torch.tensor([pk[0]]), torch.tensor([pk[1]])))
        return (rq * rk).sum(-1)

    assert torch.allclose(score((1., 2.), (4., 0.)), score((3., 5.), (6., 3.)), atol=1e-5)
    assert not torch.allclose(score((1., 2.), (4., 0.)), score((1., 2.), (0., 4.)), atol=1e-3)
    x, y = grid_positions(6, 4)
    assert x.tolist() == [0, 1, 2, 3, 0, 1] and y.tolist() == [0, 0, 0, 0, 1, 1]


def test_rope_window_attention_shapes_dtype_and_errors():
    attn = RoPEWindowAttention(16, 2, 4).eval()
    x = torch.randn(3, 16, 16)
    with torch.no_grad():
        out = attn(x)
        out_bf16 = attn.to(torch.bfloat16)(x.bfloat16())
    assert out.shape == x.shape and out_bf16.dtype == torch.bfloat16
    assert (out_bf16.float() - out).abs().max() < 0.1 * out.abs().max()
    with pytest.raises(ValueError, match=r'\(B_, 16, C\)'):
        attn(torch.randn(3, 9, 16).bfloat16())


def test_registered_and_options_checked():
    net = ARCH_REGISTRY.get('GSASRRoPE')(encoder={'type': 'EDSRBaseline', 'num_feat': 8, 'num_block': 1},
                                          **DECODER_OPTIONS)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 5, 6), scale=2.0)
    assert out.shape == (1, 3, 10, 12) and torch.isfinite(out).all()
    assert [type(b).__name__ for b in net.injection] == ['RoPEResidualGroup'] * 2
    assert not any('relative_position' in k for k in net.state_dict())
    with pytest.raises(ValueError, match='multiple of 4'):
        GSASRRoPE(encoder=ENCODERS['edsr'], **{**DECODER_OPTIONS, 'embed_dim': 12, 'num_heads': 2})
    with pytest.raises(ValueError, match='num_injection_blocks'):
        GSASRRoPE(encoder=ENCODERS['edsr'], **{**DECODER_OPTIONS, 'num_injection_blocks': 0})
    with pytest.raises(ValueError, match='multiple of 4'):
        build_encoder({**HAT_OPTIONS, 'embed_dim': 12, 'num_heads': [2, 2]})


def test_backward_and_bf16():
    net = tiny_net('hatl').train()
    lq = torch.rand(1, 3, 8, 8)
    out = net(lq, scale=2.0)
    out.mean().backward()
    grads = [p.grad for n, p in net.named_parameters() if 'rope.freqs' in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = net.eval()(lq, scale=3.0)
    assert torch.isfinite(out).all() and math.isclose(out.shape[-1], 24)
