"""pvt_mm: the Pyramid Vision Transformer as an OpenMMLab plugin."""
import os
import os.path as osp
import platform
import re
import shutil
import sys
import warnings
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r"__version__ = '(.+)'", (HERE / 'pvt_mm' / 'version.py').read_text())[1]

# The model code needs torch, mmengine and mmcv only; each downstream library is an extra.
INSTALL_REQUIRES = [
    # Tested on torch 2.1.2 (the last official mmcv 2.1.0 wheel set) and 2.14.1; features
    # that need a newer torch (ONNX export) check at the point of use (pvt_mm/capabilities.py).
    'torch>=2.1',
    'mmengine>=0.10.0,<1.0.0',
    'mmcv>=2.0.0,<2.2.0',  # mmdet 3.3 and mmseg 1.2 refuse mmcv >= 2.2
    'numpy',
    # mmengine resolves cross-library config bases (`mmdet::...`) with pkg_resources, which
    # setuptools dropped in 81.
    'setuptools<81',
]
EXTRAS = {
    'det': ['mmdet>=3.3.0,<3.4.0', 'pycocotools'],
    'seg': ['mmsegmentation>=1.2.2,<1.3.0', 'ftfy', 'regex'],  # mmseg imports ftfy/regex undeclared
    'cls': ['mmpretrain>=1.2.0,<1.3.0', 'torchvision'],
    'safetensors': ['safetensors'],
}
EXTRAS['all'] = sorted({req for reqs in EXTRAS.values() for req in reqs})
# ONNX export (torch.onnx.export(dynamo=True) needs onnxscript), ONNX Runtime inference and
# OpenVINO (2026.4 is the first release found to read opset 23's Attention).
EXTRAS['deploy'] = ['onnx>=1.18', 'onnxruntime>=1.22', 'onnxscript>=0.3', 'openvino>=2026.4']
EXTRAS['tests'] = EXTRAS['all'] + EXTRAS['deploy'] + ['pytest', 'model-index']  # model-index: mim's parser



def add_mim_extension() -> None:
    """Expose configs, tools and model-index.yml as ``pvt_mm/.mim/`` (like mmdet's setup.py).

    OpenMMLab's ``mim`` looks for them there. An editable install (``pip install -e .``,
    ``python setup.py develop``) links them to the originals; a regular build
    (``pip install .``, wheels, sdists) copies them into the package, where MANIFEST.in and
    ``include_package_data`` pick them up.
    """
    if {'develop', 'editable_wheel'} & set(sys.argv):
        mode = 'copy' if platform.system() == 'Windows' else 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'} & set(sys.argv):
        mode = 'copy'
    else:
        return  # e.g. `setup.py --version`, egg_info: nothing to prepare
    mim_path = HERE / 'pvt_mm' / '.mim'
    mim_path.mkdir(exist_ok=True)
    for name in ('configs', 'tools', 'model-index.yml'):
        src, dst = HERE / name, mim_path / name
        if not src.exists():
            continue
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        elif dst.is_dir():
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, dst.parent), dst)
        elif src.is_file():
            shutil.copyfile(src, dst)
        elif src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            warnings.warn(f'Cannot copy {src} into {mim_path}.')


add_mim_extension()

setup(
    name='pvt_mm',
    version=VERSION,
    description='Pyramid Vision Transformer (PVT) backbone for the OpenMMLab ecosystem',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['pvt_mm', 'pvt_mm.*']),
    include_package_data=True,  # pvt_mm/.mim (see MANIFEST.in and add_mim_extension)
    python_requires='>=3.9',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
