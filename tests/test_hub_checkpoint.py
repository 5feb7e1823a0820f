"""Released-model registry, offline error, and self-describing checkpoints."""
from collections import OrderedDict

import pytest
import torch

from gsasr_plugin.official import hub
from gsasr_plugin.checkpoint import META_KEY, NETWORK_KEY, network_options_of, save_checkpoint


def _model(name='test-model'):
    return hub.ReleasedModel(name=name, method='GSASR', hub_repo='someone/repo',
                             files=('a/encoder.pth', 'a/decoder.pth'), network_g={'type': 'GSASR'},
                             convert=lambda paths: {})


def test_registry_lookup_with_and_without_prefix(monkeypatch):
    monkeypatch.setattr(hub, '_REGISTRY', {})
    model = hub.register(_model())
    assert hub.released_model('official:test-model') is model
    assert hub.released_model('test-model') is model
    with pytest.raises(ValueError, match='registered twice'):
        hub.register(_model())
    with pytest.raises(ValueError, match="unknown released model 'official:nope'; known: test-model"):
        hub.released_model('official:nope')


def test_offline_error_is_one_line_naming_files_repo_and_place(monkeypatch):
    import huggingface_hub

    def refuse(**kwargs):
        raise OSError('We have no connection or you passed local_files_only=True\nsecond line')

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', refuse)
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_files(_model())
    text = str(info.value)
    assert '\n' not in text
    for part in ('official:test-model', 'a/encoder.pth a/decoder.pth', 'someone/repo', 'huggingface-cli download',
                 'https://huggingface.co/someone/repo', 'OSError: We have no connection'):
        assert part in text


def test_fetch_returns_cached_paths_in_order(monkeypatch, tmp_path):
    import huggingface_hub
    calls = []

    def fake(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', fake)
    paths = hub.fetch_files(_model(), offline=True)
    assert [p.name for p in paths] == ['encoder.pth', 'decoder.pth']
    assert calls[0] == ('someone/repo', 'a/encoder.pth', {'local_files_only': True})


def test_checkpoint_carries_network_options_and_loads_weights_only(tmp_path):
    path = tmp_path / 'model.pth'
    options = OrderedDict(type='GSASR', encoder=OrderedDict(type='EDSR', num_feat=8), window_size=4,
                          scales=(1.5, 2))
    save_checkpoint(str(path), {'module.w': torch.ones(2, requires_grad=True)}, options, source='unit test')
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded['params']['w'], torch.ones(2))
    assert network_options_of(loaded) == {'type': 'GSASR', 'encoder': {'type': 'EDSR', 'num_feat': 8},
                                          'window_size': 4, 'scales': [1.5, 2]}
    assert loaded[META_KEY]['source'] == 'unit test' and loaded[META_KEY]['version']
    assert NETWORK_KEY in loaded and not list(tmp_path.glob('*.tmp*'))
    with pytest.raises(ValueError, match="must be a dict with a 'type'"):
        save_checkpoint(str(path), {}, {'num_feat': 8})
    with pytest.raises(TypeError, match='cannot be stored'):
        save_checkpoint(str(path), {}, {'type': 'GSASR', 'bad': object()})
