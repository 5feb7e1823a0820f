"""LPIPS (AlexNet) and DISTS as BasicSR metrics: ``type: calculate_lpips`` / ``type: calculate_dists``.

Both are distances (``better: lower``) computed on RGB. The networks are built once per process and
cached per (kind, device, backbone mode); the official GSASR evaluation rebuilds them for every image.

Weights:

* LPIPS: the linear layers ship with the ``lpips`` package; the AlexNet backbone is torchvision's
  ``alexnet-owt-7be5be79.pth`` in ``$TORCH_HOME/hub/checkpoints`` (downloaded once when online).
* DISTS: alpha/beta ship with the ``DISTS-pytorch`` package (``DISTS_pytorch/weights.pt``); the VGG16
  backbone is torchvision's ``vgg16-397923af.pth`` in the same checkpoints folder.

Offline and missing a backbone file, the metric raises ``FileNotFoundError`` naming the file and the
folder to put it in. ``pretrained_backbone: false`` (or the environment variable
``GSASR_METRICS_RANDOM_BACKBONE=1``) uses a fixed-seed random backbone instead: the numbers then mean
nothing, but the plumbing runs offline (the tests use it).
"""
import os
import socket
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from basicsr.utils.registry import METRIC_REGISTRY
from gsasr_plugin.utils.safe_load import load_torch_file

__all__ = [
    'calculate_lpips', 'calculate_dists', 'perceptual_distance', 'build_perceptual_net', 'BackboneWeightsMissing',
    'RANDOM_BACKBONE_ENV'
]

RANDOM_BACKBONE_ENV = 'GSASR_METRICS_RANDOM_BACKBONE'
_BACKBONE_FILES = {
    'lpips': ('alexnet-owt-7be5be79.pth', 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
    'dists': ('vgg16-397923af.pth', 'https://download.pytorch.org/models/vgg16-397923af.pth'),
}
_LPIPS_MIN_SIDE = 31  # AlexNet's stride-4 conv and two 3x3 max pools leave nothing below this
_NET_CACHE: Dict[Tuple[str, str, bool], nn.Module] = {}


class BackboneWeightsMissing(FileNotFoundError):
    """A metric backbone's weight file is neither in TORCH_HOME nor downloadable."""


def _random_backbone_requested(pretrained_backbone: bool) -> bool:
    return (not pretrained_backbone) or os.environ.get(RANDOM_BACKBONE_ENV, '').strip() in ('1', 'true', 'yes')


def _backbone_state_dict(kind: str) -> Dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for the metric's backbone, from TORCH_HOME or (if online) downloaded."""
    filename, url = _BACKBONE_FILES[kind]
    folder = Path(torch.hub.get_dir()) / 'checkpoints'
    path = folder / filename
    if not path.is_file():
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # an unreachable host should fail in seconds, not hang the evaluation
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except Exception as error:  # any network failure ends in the same advice
            raise BackboneWeightsMissing(
                f'{kind.upper()} needs the backbone weights {filename}, which are not in {folder} and could not be '
                f'downloaded ({type(error).__name__}). Download {url} on a machine with internet and put it at '
                f'{path} (set TORCH_HOME to use another folder), or set "pretrained_backbone: false" / '
                f'{RANDOM_BACKBONE_ENV}=1 for a random backbone (plumbing tests only).') from None
        finally:
            socket.setdefaulttimeout(old_timeout)
    return load_torch_file(str(path), 'backbone weights')


def _load_features(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix_parts: int = 0) -> None:
    """Load torchvision ``features.<i>.*`` weights into modules named by original index ``<i>.*``.

    ``prefix_parts`` leading key components (e.g. lpips's ``slice1``) are dropped before matching.
    """
    own = module.state_dict()
    mapped = {}
    for key in own:
        parts = key.split('.')
        source = 'features.' + '.'.join(parts[prefix_parts:])
        if source in state_dict:
            mapped[key] = state_dict[source]
    missing = [k for k in own if k not in mapped and not k.endswith('filter')]
    if missing:
        raise KeyError(f'backbone weights lack {missing[:3]}')
    module.load_state_dict(mapped, strict=False)


class _L2Pool(nn.Module):
    """DISTS's L2 pooling: sqrt of a Hann-weighted blur of the squared input, stride 2 (replaces max pool)."""

    def __init__(self, channels: int, filter_size: int = 5):
        super().__init__()
        window = torch.from_numpy(np.hanning(filter_size)[1:-1]).float()
        kernel = window[:, None] * window[None, :]
        self.register_buffer('filter', (kernel / kernel.sum())[None, None].repeat(channels, 1, 1, 1))
        self.padding = (filter_size - 2) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=self.padding, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTSNet(nn.Module):
    """DISTS (Ding et al. 2020): VGG16 features with L2 pooling, texture and structure similarity per stage.

    Args:
        alpha_beta: dict with ``alpha`` and ``beta`` (1, 1475, 1, 1) weights; random ones when None.
    """
    channels = (3, 64, 128, 256, 512, 512)
    # (first, last) torchvision vgg16.features indices of each stage; max pools (4, 9, 16, 23) become L2 pools
    stage_ranges = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))

    def __init__(self, alpha_beta: Optional[Dict[str, torch.Tensor]] = None):
        super().__init__()
        from torchvision.models import vgg
        features = vgg.make_layers(vgg.cfgs['D'])  # vgg16's feature layers, without the 100M-weight classifier
        self.stages = nn.ModuleList()
        for stage, (start, stop) in enumerate(self.stage_ranges):
            layers = nn.Sequential()
            if stage > 0:
                layers.add_module(str(start - 1), _L2Pool(self.channels[stage]))
            for index in range(start, stop):
                layers.add_module(str(index), features[index])
            self.stages.append(layers)
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        total = sum(self.channels)
        if alpha_beta is None:
            alpha_beta = {'alpha': torch.full((1, total, 1, 1), 0.1), 'beta': torch.full((1, total, 1, 1), 0.1)}
        self.register_buffer('alpha', alpha_beta['alpha'].reshape(1, total, 1, 1).float().clone())
        self.register_buffer('beta', alpha_beta['beta'].reshape(1, total, 1, 1).float().clone())

    def _features(self, x: torch.Tensor):
        feats = [x]
        h = (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """DISTS of (B, 3, H, W) RGB images in [0, 1] -> (B,)."""
        eps = 1e-6
        weight_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / weight_sum, self.channels, dim=1)
        betas = torch.split(self.beta / weight_sum, self.channels, dim=1)
        structure = texture = 0
        for fx, fy, alpha, beta in zip(self._features(x), self._features(y), alphas, betas):
            mx, my = fx.mean([2, 3], keepdim=True), fy.mean([2, 3], keepdim=True)
            texture = texture + (alpha * (2 * mx * my + eps) / (mx**2 + my**2 + eps)).sum(1)
            vx = ((fx - mx)**2).mean([2, 3], keepdim=True)
            vy = ((fy - my)**2).mean([2, 3], keepdim=True)
            cov = (fx * fy).mean([2, 3], keepdim=True) - mx * my
            structure = structure + (beta * (2 * cov + eps) / (vx + vy + eps)).sum(1)
        return (1 - (texture + structure)).flatten()


def _dists_alpha_beta() -> Dict[str, torch.Tensor]:
    import importlib.util
    spec = importlib.util.find_spec('DISTS_pytorch')
    path = Path(spec.origin).parent / 'weights.pt' if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise BackboneWeightsMissing('DISTS needs its alpha/beta weights (weights.pt of the DISTS-pytorch package): '
                                     'run "pip install DISTS-pytorch==0.1"')
    return load_torch_file(str(path), 'DISTS weights')


class _LPIPSNet(nn.Module):
    """lpips.LPIPS(alex) built without torchvision downloading anything; input RGB [0, 1]."""

    def __init__(self, backbone_state: Optional[Dict[str, torch.Tensor]]):
        super().__init__()
        import contextlib
        import io

        import lpips
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # lpips's banner and torchvision's 'pretrained' deprecation
            self.net = lpips.LPIPS(net='alex', pretrained=True, pnet_rand=True, verbose=False)
        if backbone_state is not None:
            _load_features(self.net.net, backbone_state, prefix_parts=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y, normalize=True).flatten()


def build_perceptual_net(kind: str, device: Optional[torch.device] = None, pretrained_backbone: bool = True) -> nn.Module:
    """The cached metric network ``kind`` ('lpips' or 'dists') on ``device``, in eval mode, no gradients."""
    kind = kind.lower()
    if kind not in _BACKBONE_FILES:
        raise ValueError(f"perceptual metric kind must be 'lpips' or 'dists', got {kind!r}")
    device = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
    random_backbone = _random_backbone_requested(pretrained_backbone)
    key = (kind, str(device), random_backbone)
    if key not in _NET_CACHE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a random backbone is the same in every process: comparable plumbing runs
            backbone = None if random_backbone else _backbone_state_dict(kind)
            if kind == 'lpips':
                net = _LPIPSNet(backbone)
            else:
                net = DISTSNet(_dists_alpha_beta())
                if backbone is not None:
                    for stage in net.stages:
                        _load_features(stage, backbone)
        net.eval().requires_grad_(False)
        _NET_CACHE[key] = net.to(device)
    return _NET_CACHE[key]


def _to_rgb_tensor(img: np.ndarray, crop_border: int, input_order: str) -> torch.Tensor:
    """BasicSR metric input (HWC BGR, [0, 255], uint8 or float) -> (1, 3, H, W) RGB float in [0, 1]."""
    if input_order not in ('HWC', 'CHW'):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    elif input_order == 'CHW':
        img = img.transpose(1, 2, 0)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] >= 3:
        img = img[..., 2::-1]  # BGR (BasicSR's tensor2img) -> RGB, alpha dropped
    else:
        raise ValueError(f'metric images need 1 or 3+ channels, got shape {img.shape}')
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(img).astype(np.float32) / scale)
    return tensor.permute(2, 0, 1)[None].clamp_(0, 1)


def perceptual_distance(kind: str, x: torch.Tensor, y: torch.Tensor, pretrained_backbone: bool = True) -> torch.Tensor:
    """LPIPS/DISTS between (B, 3, H, W) RGB tensors in [0, 1] -> (B,) on the inputs' device."""
    if x.shape != y.shape:
        raise ValueError(f'images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}')
    if kind.lower() == 'lpips' and min(x.shape[-2:]) < _LPIPS_MIN_SIDE:
        raise ValueError(f'LPIPS (AlexNet) needs images of at least {_LPIPS_MIN_SIDE}x{_LPIPS_MIN_SIDE} pixels after '
                         f'crop_border, got {tuple(x.shape[-2:])}')
    net = build_perceptual_net(kind, x.device, pretrained_backbone)
    with torch.no_grad():
        return net(x.float(), y.float())


def _numpy_metric(kind, img, img2, crop_border, input_order, pretrained_backbone, device):
    if np.asarray(img).shape != np.asarray(img2).shape:
        raise ValueError(f'Image shapes are different: {np.asarray(img).shape}, {np.asarray(img2).shape}.')
    device = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
    x = _to_rgb_tensor(img, crop_border, input_order).to(device)
    y = _to_rgb_tensor(img2, crop_border, input_order).to(device)
    return float(perceptual_distance(kind, x, y, pretrained_backbone).item())


@METRIC_REGISTRY.register()
def calculate_lpips(img, img2, crop_border=0, input_order='HWC', pretrained_backbone=True, device=None, **kwargs):
    """LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018); lower is better.

    Args:
        img (ndarray): image in [0, 255], BGR as BasicSR's ``tensor2img`` gives (uint16 in [0, 65535] too).
        img2 (ndarray): reference image, same shape.
        crop_border (int): pixels cut from each edge before measuring.
        input_order (str): 'HWC' or 'CHW'.
        pretrained_backbone (bool): False uses a fixed random AlexNet (offline plumbing tests only).
        device (str | None): where to run; CUDA when available by default.
        kwargs: ignored (``test_y_channel``: LPIPS is always computed on RGB; ``better`` is for BasicSR).

    Returns:
        float: LPIPS distance, >= 0.
    """
    return _numpy_metric('lpips', img, img2, crop_border, input_order, pretrained_backbone, device)


@METRIC_REGISTRY.register()
def calculate_dists(img, img2, crop_border=0, input_order='HWC', pretrained_backbone=True, device=None, **kwargs):
    """DISTS (Ding et al. 2020); lower is better, 0 for identical images.

    Args:
        img (ndarray): image in [0, 255], BGR as BasicSR's ``tensor2img`` gives (uint16 in [0, 65535] too).
        img2 (ndarray): reference image, same shape.
        crop_border (int): pixels cut from each edge before measuring.
        input_order (str): 'HWC' or 'CHW'.
        pretrained_backbone (bool): False uses a fixed random VGG16 (offline plumbing tests only).
        device (str | None): where to run; CUDA when available by default.
        kwargs: ignored (``test_y_channel``: DISTS is always computed on RGB; ``better`` is for BasicSR).

    Returns:
        float: DISTS distance.
    """
    return _numpy_metric('dists', img, img2, crop_border, input_order, pretrained_backbone, device)
