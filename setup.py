"""The build step setup.cfg cannot declare: the top-level schema.sql, the one source of the
schema, copied into the package, so that an installed service finds it with no settings."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithSchema(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "service" / "schema.sql"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).resolve().parent / "schema.sql", target)


setup(cmdclass={"build_py": BuildWithSchema})
