"""Installs ``gsasr_plugin`` (with the top-level ``ops/`` folder as ``gsasr_plugin.ops``).

The CUDA rasterizer extension ``gsasr_plugin.ops._C`` is compiled when CUDA is usable here
(``torch.cuda.is_available()``) or when ``GSASR_BUILD_CUDA=1`` asks for it (a machine with nvcc and no
GPU can compile it); ``GSASR_BUILD_CUDA=0`` skips it. Without it, everything runs on the pure-PyTorch
path. Install with ``pip install --no-build-isolation .`` so that the build sees the installed torch.
"""
import glob
import os

from setuptools import find_packages, setup


def _find_cuda_home():
    """The CUDA toolkit folder: nvcc's (symlinks resolved) or /usr/local/cuda, whichever has libcudart."""
    import shutil
    nvcc = shutil.which('nvcc')
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates.append('/usr/local/cuda')
    for home in candidates:
        if glob.glob(os.path.join(home, 'lib*', 'libcudart.so*')):
            return home
    return None


def cuda_extensions():
    """The extension list: the CUDA rasterizer when asked for or when a GPU is present, else empty."""
    wanted = os.environ.get('GSASR_BUILD_CUDA', '').strip()
    if wanted == '0':
        return [], {}
    if not os.environ.get('CUDA_HOME') and not os.environ.get('CUDA_PATH'):
        # torch guesses CUDA_HOME from `which nvcc`; an nvcc wrapper or symlink in /usr/local/bin would give
        # /usr/local, which has no libcudart. Use the first candidate that really holds the runtime.
        home = _find_cuda_home()
        if home:
            os.environ['CUDA_HOME'] = home
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    if wanted != '1' and not torch.cuda.is_available():
        return [], {}
    if CUDA_HOME is None:
        if wanted == '1':
            raise RuntimeError('GSASR_BUILD_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to it')
        return [], {}
    sources = sorted(glob.glob('ops/csrc/*.cpp') + glob.glob('ops/csrc/*.cu'))
    if not sources:
        return [], {}
    ext = CUDAExtension(
        name='gsasr_plugin.ops._C',
        sources=sources,
        extra_compile_args={'cxx': ['-O3'], 'nvcc': ['-O3', '--use_fast_math', '-lineinfo']},
    )
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=True)}


def read_version():
    """``__version__`` of gsasr_plugin/__init__.py: the one place the version is written."""
    import re
    with open(os.path.join('gsasr_plugin', '__init__.py'), encoding='utf-8') as handle:
        return re.search(r"^__version__ = '([^']+)'", handle.read(), re.MULTILINE).group(1)


ext_modules, cmdclass = cuda_extensions()

setup(
    name='gsasr-basicsr',
    version=read_version(),
    description='Arbitrary-scale super-resolution by 2D Gaussian splatting (GSASR, GaussianSR, ContinuousSR) '
    'as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['gsasr_plugin', 'gsasr_plugin.*', 'gsasr_plugin_cli']) + ['gsasr_plugin.ops'],
    package_dir={'gsasr_plugin.ops': 'ops'},
    package_data={'gsasr_plugin.ops': ['csrc/*.cu', 'csrc/*.cpp', 'csrc/*.h', 'csrc/*.cuh']},
    install_requires=[
        'torch>=2.1',
        'torchvision',
        'basicsr==1.4.2',
        'mmengine>=0.10',
        'timm>=1.0',
        'huggingface_hub',  # downloads released (official) checkpoints by short name
        'numpy',
        'opencv-python',
        'lpips',
        'DISTS-pytorch==0.1',  # ships DISTS's alpha/beta weights (weights.pt)
        'scikit-image',
        'matplotlib',  # the PSNR-vs-scale plot of basicsr test, the Gaussian drawings of basicsr infer
        'Pillow',  # zoom GIFs, image headers
        'pyyaml',
        'tqdm',
    ],
    extras_require={'test': ['pytest>=7']},
    # the front end is outside gsasr_plugin so that --help / --version / -h do not import torch
    entry_points={'console_scripts': ['basicsr = gsasr_plugin_cli:main']},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
