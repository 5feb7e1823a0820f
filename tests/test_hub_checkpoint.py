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


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf-cache'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    for name in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / 'hf-cache'


def test_offline_error_is_fast_one_line_and_says_where_files_go(monkeypatch, hub_cache):
    """Issue 26, item 13: offline, the error came after 115-280 s of hub retries, cut the hub's reason and
    named `huggingface-cli download`, which huggingface_hub 2.x no longer installs. Now: the cache is looked
    up, one probe of the hub fails at once, and the line names the cache in use and both routes."""
    import socket
    import time

    import huggingface_hub
    calls = []

    def cache_only(**kwargs):
        calls.append(kwargs)
        if not kwargs.get('local_files_only'):
            raise AssertionError('no download may be tried when the hub cannot be reached')
        raise OSError('We have no connection or you passed local_files_only=True\nsecond line')

    def unreachable(address, timeout=None):
        raise OSError(101, 'Network is unreachable')

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', cache_only)
    monkeypatch.setattr(socket, 'create_connection', unreachable)
    start = time.monotonic()
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_files(_model())
    assert time.monotonic() - start < 10
    text = str(info.value)
    assert '\n' not in text and len(calls) == 1
    for part in ('official:test-model', 'a/encoder.pth a/decoder.pth', 'someone/repo', 'https://huggingface.co',
                 'cannot be reached from this machine (OSError: [Errno 101] Network is unreachable',
                 '`hf download someone/repo a/encoder.pth a/decoder.pth --local-dir test-model-files`',
                 '-m test-model-files/a (the folder of its files)', f'copy that hub cache into {hub_cache}',
                 'https://huggingface.co/someone/repo'):
        assert part in text, part
    assert 'huggingface-cli' not in text


def test_a_hub_error_is_quoted_whole(monkeypatch, hub_cache):
    import socket

    import huggingface_hub
    reason = 'Repository Not Found for url: https://huggingface.co/someone/repo. ' + 'Please make sure ' * 20 + \
        '\nyou are authenticated.'

    def download(**kwargs):
        raise (OSError('not cached') if kwargs.get('local_files_only') else RuntimeError(reason))

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
    monkeypatch.setattr(socket, 'create_connection', lambda address, timeout=None: Connection())
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.fetch_files(_model())
    assert 'RuntimeError: ' + ' '.join(reason.split()) in str(info.value) and '\n' not in str(info.value)


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
