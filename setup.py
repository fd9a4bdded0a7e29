"""Build glue that setup.cfg cannot express: ship the start-up ``.pth`` file.

All metadata lives in setup.cfg. The ``.pth`` line (see lm_eval_kinject/_startup.py) must sit at the
top of site-packages, which package data cannot reach, so ``build_py`` copies it there (the same
technique pytest-cov and coverage use for their start-up hooks).
"""
from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "lm_eval_kinject.pth"


class build_py_with_pth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH),
                       os.path.join(self.build_lib, PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": build_py_with_pth})
