"""Installs ``gsasr_plugin`` (with the top-level ``ops/`` folder as ``gsasr_plugin.ops``).

The compiled rasterizer ``gsasr_plugin.ops._C`` (``ops/csrc``) is built on every install that has a C++
compiler: its CPU kernel always, its CUDA kernel when CUDA is usable here (``torch.cuda.is_available()``) or
when ``GSASR_BUILD_CUDA=1`` asks for it (a machine with nvcc and no GPU can compile it; ``GSASR_BUILD_CUDA=0``
leaves it out). Without a compiler, or when the build fails, the install still succeeds and the rasterizer
runs on its pure-PyTorch path (it warns once); ``GSASR_BUILD_EXT=1`` turns such a failure into an error and
``GSASR_BUILD_EXT=0`` skips the extension. Install with ``pip install --no-build-isolation .`` (or ``-e .``) so
that the build sees the installed torch.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup


def _find_cuda_home():
    """The CUDA toolkit folder: nvcc's (symlinks resolved) or /usr/local/cuda, whichever has libcudart."""
    nvcc = shutil.which('nvcc')
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates.append('/usr/local/cuda')
    for home in candidates:
        if glob.glob(os.path.join(home, 'lib*', 'libcudart.so*')):
            return home
    return None


def _note(message):
    print(f'gsasr-basicsr setup: {message}', file=sys.stderr)


def _want_cuda(torch):
    """Whether to compile the CUDA kernel too (raises when asked for and impossible)."""
    wanted = os.environ.get('GSASR_BUILD_CUDA', '').strip()
    if wanted == '0':
        return False
    if wanted != '1' and not torch.cuda.is_available():
        return False
    from torch.utils.cpp_extension import CUDA_HOME
    if CUDA_HOME is None:
        if wanted == '1':
            raise RuntimeError('GSASR_BUILD_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to it')
        _note('CUDA is available but no CUDA toolkit was found: building the CPU kernel only')
        return False
    return True


def rasterizer_extensions():
    """([the extension], cmdclass): the CPU kernel (+ the CUDA kernel), or ([], {}) when it cannot be built."""
    required = os.environ.get('GSASR_BUILD_EXT', '').strip()
    if required == '0':
        return [], {}
    if not os.environ.get('CUDA_HOME') and not os.environ.get('CUDA_PATH'):
        # torch guesses CUDA_HOME from `which nvcc` when cpp_extension is first imported; an nvcc wrapper or
        # symlink in /usr/local/bin would give /usr/local, which has no libcudart. Use the first candidate that
        # really holds the runtime.
        home = _find_cuda_home()
        if home:
            os.environ['CUDA_HOME'] = home
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        _note('torch is not importable at build time (use pip install --no-build-isolation): '
              'gsasr_plugin.ops._C not built, the pure-PyTorch rasterizer will be used')
        return [], {}
    compiler = os.environ.get('CXX', 'c++')
    if not shutil.which(compiler.split()[0]):
        if required == '1':
            raise RuntimeError(f'GSASR_BUILD_EXT=1 but no C++ compiler ({compiler}) was found')
        _note(f'no C++ compiler ({compiler}): gsasr_plugin.ops._C not built, the pure-PyTorch rasterizer will be used')
        return [], {}
    cuda = _want_cuda(torch)
    # no FP traps or errno: lets the compiler turn the per-pixel selects into vector blends
    cxx_flags = ['-O3'] if sys.platform == 'win32' else ['-O3', '-fno-trapping-math', '-fno-math-errno']
    link_flags = []
    if sys.platform.startswith('linux'):
        cxx_flags.append('-fopenmp')  # at::parallel_for uses torch's OpenMP runtime (libgomp.so.1, loaded by torch)
        link_flags.append('-fopenmp')
    sources = ['ops/csrc/bindings.cpp', 'ops/csrc/rasterize_cpu.cpp']
    if cuda:
        ext = CUDAExtension(
            name='gsasr_plugin.ops._C',
            sources=sources + ['ops/csrc/rasterize.cu'],
            define_macros=[('GSASR_WITH_CUDA', None)],
            extra_compile_args={'cxx': cxx_flags, 'nvcc': ['-O3', '--use_fast_math', '-lineinfo']},
            extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(name='gsasr_plugin.ops._C', sources=sources, extra_compile_args={'cxx': cxx_flags},
                           extra_link_args=link_flags)
    ext.depends = sorted(glob.glob('ops/csrc/*.h'))

    class OptionalBuildExtension(BuildExtension.with_options(use_ninja=True)):
        """Leaves the extension out (with a note) when it does not build, unless GSASR_BUILD_EXT=1 or
        GSASR_BUILD_CUDA=1 asked for it."""

        def run(self):
            try:
                super().run()
            except Exception as err:  # noqa: BLE001 (compiler errors come as several types)
                if required == '1' or os.environ.get('GSASR_BUILD_CUDA', '').strip() == '1':
                    raise
                _note(f'building gsasr_plugin.ops._C failed ({err}): the pure-PyTorch rasterizer will be used')

    return [ext], {'build_ext': OptionalBuildExtension}


def read_version():
    """``__version__`` of gsasr_plugin/version.py: the one place the version is written."""
    import re
    with open(os.path.join('gsasr_plugin', 'version.py'), encoding='utf-8') as handle:
        return re.search(r"^__version__ = '([^']+)'", handle.read(), re.MULTILINE).group(1)


ext_modules, cmdclass = rasterizer_extensions()

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
        'torch>=2.6',  # torch.load defaults to weights_only=True (the plugin also passes it explicitly)
        'torchvision',
        'basicsr==1.4.2',
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
        'ninja',  # torch's cpp_extension builds the rasterizer on first use where the install built none
    ],
    extras_require={
        'app': ['gradio>=6'],  # basicsr app (the browser page)
        # the browser test drives Debian's Chromium (apt-get install chromium) with Playwright; no browser download
        'test': ['pytest>=7', 'gradio>=6', 'playwright'],
    },
    # the front end is outside gsasr_plugin so that --help / --version / -h do not import torch
    entry_points={'console_scripts': ['basicsr = gsasr_plugin_cli:main']},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
