"""GaussianSR against the official code (tljxyys/GaussianSR): reference outputs made by their code
(tests/fixtures/gaussiansr_official, see its README), their checkpoint layout and key list, the converter,
the official option files, and the options that reproduce their forward."""
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import gsasr_plugin  # noqa: F401  (registers archs and encoders)
from basicsr.archs import build_network
from gsasr_plugin.archs.gaussiansr_arch import GaussianSR
from gsasr_plugin.official.gaussiansr import (OFFICIAL_MODEL_NAME, OFFICIAL_NETWORK_G, OFFICIAL_TRAIN_ARGS,
                                                    convert_official_files, convert_state_dict,
                                                    load_official_checkpoint, main, official_network_options,
                                                    official_state_dict_keys)
from gsasr_plugin.archs.pretrained import is_liif_checkpoint
from gsasr_plugin.archs.gaussiansr_patches import liif_offsets_and_cell, patch_kernel_images, place_kernels

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'tests' / 'fixtures' / 'gaussiansr_official'
CASES = sorted(FIXTURES.glob('case_*.pt'))


@pytest.fixture(scope='module')
def official_tiny():
    """Their tiny checkpoint converted: (network_g, state dict)."""
    converted = load_official_checkpoint(FIXTURES / 'weights.pt')
    return converted.network_g, converted.state_dict


def build(network_g, state, **overrides) -> GaussianSR:
    net = build_network(dict(network_g, **overrides))
    net.load_state_dict(state, strict=True)
    return net


def test_fixtures_exist_and_record_their_origin():
    assert len(CASES) == 5
    for path in CASES + [FIXTURES / 'weights.pt']:
        assert path.stat().st_size < 300_000, path
        meta = torch.load(path, weights_only=True)['meta']
        assert meta['official_commit'] == 'ef5a38dcc5cff0c88766c6c93040bad57b994032'
    readme = (FIXTURES / 'README.md').read_text()
    assert 'ef5a38dcc5cff0c88766c6c93040bad57b994032' in readme and 'make_fixtures.py' in readme


@pytest.mark.parametrize('case', CASES, ids=lambda p: p.stem[len('case_'):])
def test_forward_matches_the_official_code(official_tiny, case):
    """Features and Gaussians within 1e-5, images within 1e-4 of what their code computed, with the same
    Gumbel noise (same seed: train mode draws soft weights, eval mode their hard sample)."""
    network_g, state = official_tiny
    ref = torch.load(case, weights_only=True)
    net = build(network_g, state, kernel_size=ref['kernel_size'], kernel_choice_eval='gumbel')
    net.train(ref['mode'] == 'train')
    captured = {}
    net.decoder.coef.register_forward_pre_hook(lambda module, args: captured.update(decoder_input=args[0]))
    net.classifier.register_forward_hook(lambda module, args, out: captured.update(logits=out))
    original = net.kernel_weights
    net.kernel_weights = lambda logits: captured.setdefault('weights', original(logits))
    torch.manual_seed(ref['seed'])
    with torch.set_grad_enabled(ref['mode'] == 'train'):
        field = net.encode(ref['lq'], ref['scale'])
        out = net.render(field, ref['out_size'], scale=ref['scale'])
    feat = net.encoder(net.normalise(ref['lq'])).detach()
    assert (feat - ref['feat']).abs().max() < 1e-5
    assert (captured['weights'] - ref['weights']).abs().max() < 1e-5
    params = field.patches.params[0, 0].detach()  # (49, 4): ours (sigma_x, sigma_y, rho, opacity)
    theirs = ref['gaussian_params']  # their (sigma_x = rows, sigma_y = columns, opacity, rho)
    assert field.patches.params.shape[1] == 1  # one set per image: patch-averaged
    assert (torch.stack((params[:, 1], params[:, 0], params[:, 3], params[:, 2])) - theirs).abs().max() < 1e-5
    assert (captured['decoder_input'][:, :8] - ref['decoder_input'][:, :8]).abs().max() < 1e-5  # splatted
    assert (captured['decoder_input'][:, 8:] - ref['decoder_input'][:, 8:]).abs().max() < 1e-5  # bicubic
    assert (out - (ref['pred_normalised'] * 0.5 + 0.5)).abs().max() < 1e-4
    if ref['mode'] == 'train':  # one training step: their L1 on normalised values, our output denormalised
        ((out - 0.5) / 0.5 - ref['target']).abs().mean().backward()
        ours = dict(net.named_parameters())
        sigma = ours['kernel_sigma'].grad
        pairs = {'sigma_x': sigma[:, 1], 'sigma_y': sigma[:, 0], 'rho': ours['kernel_rho'].grad[:, None],
                 'opacity': ours['kernel_opacity'].grad[:, None],
                 'encoder.segmentation_head.0.bias': ours['classifier.bias'].grad,
                 'encoder.edsr.head.0.weight': ours['encoder.conv_first.weight'].grad,
                 'coef.bias': ours['decoder.coef.bias'].grad,
                 'freq.bias': ours['decoder.freq.bias'].grad.view(-1, 2).flip(1).reshape(-1),  # (y, x) pairs
                 'phase.weight': ours['decoder.phase.weight'].grad.flip(1),
                 'dec.layers.0.bias': ours['decoder.mlp.0.bias'].grad,
                 'dec.layers.4.weight': ours['decoder.mlp.4.weight'].grad[..., 0, 0],
                 'dec.layers.4.bias': ours['decoder.mlp.4.bias'].grad}
        for key, grad in pairs.items():
            theirs = ref[f'grad/{key}']
            assert (grad - theirs).abs().max() <= 1e-4 * theirs.abs().max() + 1e-9, key


def test_forward_equals_encode_render_and_pixel_index_decodes_those_pixels(official_tiny):
    network_g, state = official_tiny
    net = build(network_g, state).eval()
    lq = torch.rand(2, 3, 9, 10)
    with torch.no_grad():
        full = net(lq, scale=2.5)
        assert full.shape == (2, 3, 22, 25)  # round(22.5) = 22 (Python's round, as theirs)
        assert torch.equal(full, net.render(net.encode(lq, 2.5), (22, 25)))  # the field keeps the scale
        index = torch.stack([torch.randperm(22 * 25)[:40] for _ in range(2)])
        picked = net(lq, scale=2.5, pixel_index=index)
    assert picked.shape == (2, 3, 40)
    assert torch.allclose(picked, full.flatten(2).gather(2, index.unsqueeze(1).expand(-1, 3, -1)), atol=1e-6)


def test_softmax_choice_is_the_expectation_of_their_sampled_choice(official_tiny):
    """Patch-averaged parameters with the softmax weights equal the mean over Gumbel samples."""
    network_g, state = official_tiny
    lq = torch.rand(1, 3, 14, 14)
    soft = build(network_g, state, kernel_choice_eval='softmax').eval()
    sampled = build(network_g, state, kernel_choice_eval='gumbel').eval()
    with torch.no_grad():
        expected = soft.encode(lq).patches.params
        assert torch.equal(expected, soft.encode(lq).patches.params)  # deterministic
        draws = torch.stack([sampled.encode(lq).patches.params for _ in range(100)])
    assert not torch.equal(draws[0], draws[1])
    # the sample mean is within 5 standard errors of the softmax expectation, everywhere
    standard_error = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - expected).abs() <= 5 * standard_error + 1e-6).all()
    assert (draws[0] - expected).abs().max() > 5 * (draws.mean(0) - expected).abs().max()


def test_patch_mean_images_averages_over_groups_of_images(official_tiny):
    network_g, state = official_tiny
    lq = torch.rand(4, 3, 7, 7)
    with torch.no_grad():
        whole = build(network_g, state).eval().encode(lq).patches.params
        groups = build(network_g, state, patch_mean_images=2).eval().encode(lq).patches.params
        alone = [build(network_g, state).eval().encode(lq[i:i + 2]).patches.params for i in (0, 2)]
    assert torch.equal(whole[0], whole[3])  # one set for the whole batch
    assert torch.allclose(groups[:2], alone[0], atol=1e-6) and torch.allclose(groups[2:], alone[1], atol=1e-6)
    assert not torch.allclose(groups[0], groups[2])


def test_per_pixel_kernels_with_patch_splatting(official_tiny):
    """kernel_sharing: pixel keeps one kernel per LR pixel (no averaging); with identical patches it equals
    the patch mean."""
    network_g, state = official_tiny
    net = build(network_g, state, kernel_sharing='pixel').eval()
    tile = torch.rand(1, 3, 7, 7)
    with torch.no_grad():
        field = net.encode(tile.repeat(1, 1, 2, 2)[..., :14, :14])
        out = net.render(field, (28, 28))
    assert field.patches.params.shape == (1, 4, 49, 4) and torch.isfinite(out).all()
    with torch.no_grad():
        mean = build(network_g, state).eval().encode(tile).patches.params
    assert torch.allclose(net.encode(tile).patches.params, mean, atol=1e-6)


def test_kernel_images_and_their_placement():
    # an isotropic kernel: exp(-x^2 / (2 sigma^2)) at offsets -5, -2.5, 0, 2.5, 5, peak 1
    kernel = patch_kernel_images(torch.tensor([[2.0, 2.0, 0.0, 1.0]]), 5)[0]
    offsets = torch.tensor([-5.0, -2.5, 0.0, 2.5, 5.0])
    expected = torch.exp(-(offsets[:, None]**2 + offsets[None, :]**2) / (2 * (4 + 1e-5)))
    assert torch.allclose(kernel, expected, atol=1e-6) and kernel.max() == 1
    # sigma_x spreads along columns
    wide = patch_kernel_images(torch.tensor([[3.0, 0.5, 0.0, 1.0]]), 5)[0]
    assert wide[2, 0] > wide[0, 2]
    # placement: patch pixel (i, j) of a 7x7 patch peaks at output row i (kh - 1) / 7, column j (kw - 1) / 7
    delta = torch.zeros(1, 49, 3, 3)
    delta[..., 1, 1] = 1.0
    images = place_kernels(delta, (7, 7), (15, 15))  # pad 12: even, no half-pixel shift
    for n in (0, 8, 24, 48):
        i, j = divmod(n, 7)
        centre = (images[0, n] * torch.arange(15.0)[:, None]).sum() / images[0, n].sum(), \
            (images[0, n] * torch.arange(15.0)[None, :]).sum() / images[0, n].sum()
        assert abs(centre[0] - i * 14 / 7) < 1e-4 and abs(centre[1] - j * 14 / 7) < 1e-4


def test_liif_offsets_break_ties_like_grid_sample_nearest():
    """At x1.5 some output pixel centres lie on an LR pixel boundary: LIIF's nearest lookup picks the even
    index, our default the pixel the centre belongs to; elsewhere both agree."""
    rel, cell = liif_offsets_and_cell((4, 4), (6, 6))
    ys = (torch.arange(6) + 0.5) / 1.5
    ours = 2 * (ys - torch.floor(ys) - 0.5)
    ties = (ys == torch.floor(ys))
    assert ties.any()
    assert torch.allclose(rel[1, :, 0][~ties], ours[~ties], atol=1e-5)
    assert torch.allclose(rel[1, :, 0][ties].abs(), torch.ones(int(ties.sum())))
    assert torch.allclose(cell, torch.tensor([4 / 3, 4 / 3]))


def test_default_key_list_is_what_their_code_produces():
    """keys_default.json was printed by their GaussianSplatter for their training config."""
    recorded = json.loads((FIXTURES / 'keys_default.json').read_text())
    assert recorded['args'] == OFFICIAL_TRAIN_ARGS
    assert {k: tuple(v) for k, v in recorded['keys'].items()} == official_state_dict_keys(OFFICIAL_TRAIN_ARGS)


def test_their_key_set_loads_strictly_into_the_official_options():
    network_g = yaml.safe_load((REPO / 'options' / 'train_gaussiansr_edsr_official.yml').read_text())['network_g']
    assert {k: v for k, v in network_g.items() if k != 'patch_mean_images'} == \
        {k: v for k, v in OFFICIAL_NETWORK_G.items() if k != 'patch_mean_images'}
    gen = torch.Generator().manual_seed(0)
    shapes = json.loads((FIXTURES / 'keys_default.json').read_text())['keys']
    state = {k: torch.randn(v, generator=gen) for k, v in shapes.items()}
    net = build(network_g, convert_state_dict(state, OFFICIAL_TRAIN_ARGS))
    assert sum(p.numel() for p in net.parameters()) == sum(v.numel() for k, v in state.items() if '_mean.' not in k)
    assert torch.equal(net.kernel_sigma[:, 0], state['sigma_y'])  # their sigma_y spreads along columns (x)
    assert torch.equal(net.kernel_sigma[:, 1], state['sigma_x'])


def test_converter_rejects_wrong_layouts(tmp_path):
    state = {k: torch.zeros(v) for k, v in official_state_dict_keys(OFFICIAL_TRAIN_ARGS).items()}
    missing = dict(state)
    del missing['phase.weight']
    with pytest.raises(ValueError, match='1 missing .*phase.weight'):
        convert_state_dict(missing, OFFICIAL_TRAIN_ARGS)
    with pytest.raises(ValueError, match='unexpected .*extra'):
        convert_state_dict(dict(state, extra=torch.zeros(1)), OFFICIAL_TRAIN_ARGS)
    with pytest.raises(ValueError, match='other shapes .*coef.bias'):
        convert_state_dict(dict(state, **{'coef.bias': torch.zeros(7)}), OFFICIAL_TRAIN_ARGS)
    torch.save({'params': state}, tmp_path / 'ours.pth')
    with pytest.raises(ValueError, match='not an official GaussianSR checkpoint'):
        load_official_checkpoint(tmp_path / 'ours.pth')
    with pytest.raises(FileNotFoundError, match='no such file'):
        load_official_checkpoint(tmp_path / 'missing.pth')
    with pytest.raises(ValueError, match='hidden_list|num_points'):
        official_network_options(dict(OFFICIAL_TRAIN_ARGS, num_points=64))
    assert not is_liif_checkpoint({'params': state}, OFFICIAL_MODEL_NAME)


def test_converter_command_writes_a_checkpoint_basicsr_loads(tmp_path, capsys):
    target = tmp_path / 'converted.pth'
    assert main([str(FIXTURES / 'weights.pt'), str(target)]) == 0
    assert 'splatting: patches' in capsys.readouterr().out
    saved = torch.load(target, weights_only=True)
    assert saved['network_g']['splatting'] == 'patches' and 'official GaussianSR' in saved['gsasr_plugin']['source']
    net = build(saved['network_g'], saved['params'])
    converted = convert_official_files([FIXTURES / 'weights.pt'])
    assert torch.equal(net.decoder.freq.weight, converted['decoder.freq.weight'])
    assert main([str(tmp_path / 'missing.pth'), str(tmp_path / 'x.pth')]) == 1
    assert 'no such file' in capsys.readouterr().err


def test_bad_official_option_combinations_raise():
    with pytest.raises(ValueError, match='kernel_sharing'):
        GaussianSR(encoder={'type': 'EDSREncoder', 'num_feat': 12, 'num_block': 1}, kernel_sharing='patch_mean')
    with pytest.raises(ValueError, match='kernel_choice_eval'):
        GaussianSR(encoder={'type': 'EDSREncoder', 'num_feat': 12, 'num_block': 1}, kernel_choice_eval='max')
    net = build_network(dict(OFFICIAL_NETWORK_G, encoder={'type': 'EDSREncoder', 'num_feat': 12, 'num_block': 1},
                             decoder_dim=8, mlp_hidden=[8])).eval()
    with torch.no_grad():
        field = net.encode(torch.rand(1, 3, 7, 7))
        with pytest.raises(ValueError, match='window'):
            net.render(field, (14, 14), window=(0, 0, 3, 3))
        with pytest.raises(ValueError, match='kernel_size 5 is larger'):
            net(torch.rand(1, 3, 7, 7), scale=0.5)
        assert net.render(field, (14, 14), window=(0, 0, 7, 7)).shape == (1, 3, 14, 14)  # the whole image


def test_official_training_recipe_file():
    opt = yaml.safe_load((REPO / 'options' / 'train_gaussiansr_edsr_official.yml').read_text())
    train = opt['datasets']['train']
    assert (train['lq_size'], train['sample_q'], train['dataset_enlarge_ratio'], train['batch_size_per_gpu'],
            train['lq_resize'], train['scale_min'], train['scale_max']) == (48, 2304, 20, 16, 'pil', 1, 4)
    assert opt['network_g']['kernel_size'] == 5 and opt['network_g']['mlp_hidden'] == [256] * 4
    assert (opt['network_g']['norm_mean'], opt['network_g']['norm_std']) == (0.5, 0.5)
    schedule = opt['train']['scheduler']
    assert schedule['milestones'] == [200000 * k for k in range(1, 10)] and schedule['gamma'] == 0.5
    assert opt['train']['total_iter'] == 2000 * 800 * 20 // 16
    assert opt['train']['optim_g']['lr'] == 1e-4 and opt['train']['pixel_opt']['loss_weight'] == 2.0
    assert math.isclose(48 * 48, train['sample_q'])


def test_their_checkpoint_by_path_through_basicsr_test_infer_and_convert(tmp_path, photo, capsys):
    """Their (tiny) checkpoint file as it is, by path: the shipped official test options (network shrunk to the
    checkpoint's, data pointed at photos with pre-made LR files) run by the real `basicsr test`;
    `basicsr infer` and `basicsr convert` take the file too (the released model's converter)."""
    import os
    import re
    import subprocess
    import sys

    import cv2
    import numpy as np

    from gsasr_plugin_cli import main
    from gsasr_plugin.utils.resize import matlab_bicubic_resize
    theirs = FIXTURES / 'weights.pt'
    network_g = load_official_checkpoint(theirs).network_g
    (tmp_path / 'hr').mkdir()
    (tmp_path / 'lr' / 'X2').mkdir(parents=True)
    for name in ('astronaut', 'coffee'):
        hr = photo(name, (44, 50))
        cv2.imwrite(str(tmp_path / 'hr' / f'{name}.png'), hr[:, :, ::-1])
        lr = matlab_bicubic_resize(hr.astype(np.float32) / 255, (22, 25))
        cv2.imwrite(str(tmp_path / 'lr' / 'X2' / f'{name}x2.png'), (np.clip(lr, 0, 1) * 255).round()[:, :, ::-1])
    opt = yaml.safe_load((REPO / 'options' / 'test_benchmarks_liif.yml').read_text())
    paired, on_the_fly = opt['datasets']['test_1'], opt['datasets']['test_2']
    paired.update(dataroot_gt='hr', dataroot_lq='lr/X{scale}', scales=[2])
    on_the_fly.update(dataroot_gt='hr', scales=[3])
    opt.update(num_gpu=0, network_g=network_g, datasets={'test_1': paired, 'test_2': on_the_fly})
    opt['path']['pretrain_network_g'] = str(theirs)
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(opt, sort_keys=False))
    proc = subprocess.run([sys.executable, '-m', 'gsasr_plugin_cli', 'test', '-opt', 'test.yml'], cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS='2'), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = next((tmp_path / 'results' / opt['name']).glob('*.log')).read_text()
    assert re.search(r'Loaded GaussianSR from .*weights.pt \(official file of gaussiansr-edsr-official\)', log)
    assert re.search(r'Validation Set5 .*\n\s+# psnr_x2: \d+\.\d+ \[\d+\.\d+\]', log)
    assert re.search(r'Validation Set5_ood .*\n\s+# psnr_x3: \d+\.\d+', log)

    options = tmp_path / 'infer.yml'
    options.write_text(yaml.safe_dump({'network_g': network_g}))
    photo_in = str(tmp_path / 'hr' / 'coffee.png')
    assert main(['infer', '-opt', str(options), '--model', str(theirs), '-i', photo_in, '-o', str(tmp_path / 'out'),
                      '--scale', '2.5', '--device', 'cpu']) == 0
    assert cv2.imread(str(tmp_path / 'out' / 'coffee_x2.5.png')).shape == (110, 125, 3)
    assert main(['infer', '-opt', str(options), '--model', str(theirs), '-i', photo_in, '-o', str(tmp_path / 'out2'),
                      '--scale', '2', '--device', 'cpu', '--save-gaussians']) == 1
    assert 'no per-pixel Gaussians to draw' in capsys.readouterr().err  # one line, no traceback
    ours = tmp_path / 'converted.pth'
    assert main(['convert', '--model', str(theirs), '-opt', str(options), '-o', str(ours)]) == 0
    saved = torch.load(ours, weights_only=True)
    assert saved['network_g']['splatting'] == 'patches'
    assert main(['infer', '--model', str(ours), '-i', photo_in, '-o', str(tmp_path / 'out3'), '--scale', '2.5',
                      '--device', 'cpu']) == 0  # no -opt: the checkpoint carries its network_g
    assert np.array_equal(cv2.imread(str(tmp_path / 'out3' / 'coffee_x2.5.png')),
                          cv2.imread(str(tmp_path / 'out' / 'coffee_x2.5.png')))


def test_released_model_short_name_says_where_to_get_the_file():
    from gsasr_plugin.official import hub
    model = hub.released_model('official:gaussiansr-edsr-official')
    assert model.method == 'GaussianSR' and model.network_g == OFFICIAL_NETWORK_G
    with pytest.raises(hub.WeightsUnavailableError, match='not on the Hugging Face hub; download it from '
                       'https://github.com/tljxyys/GaussianSR/blob/main/save/edsr-baseline-gaussiansr/epoch-last.pth'):
        hub.fetch_files(model)
