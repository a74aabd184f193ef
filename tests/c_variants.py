"""Build another variant of one of the core's C extensions, from the same source with one
macro defined, for tests that compare the two builds."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType

import imgcompress_core


def build_variant(
    name: str, define: str, into: Path, libraries: tuple[str, ...] = ()
) -> ModuleType:
    """Compile ``imgcompress_core/<name>.c`` with ``-D<define>`` into ``into`` and import it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "the accelerators' tests need the C compiler they were built with"
    source = Path(imgcompress_core.__file__).parent / f"{name}.c"
    if not source.exists():  # an installed wheel ships no C sources: use the checkout's
        source = Path(__file__).parents[1] / "src" / "imgcompress_core" / f"{name}.c"
    built = into / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    command = [cc, "-shared", "-fPIC", "-O2", f"-D{define}", f"-I{include}", str(source)]
    subprocess.run([*command, "-o", str(built), *(f"-l{lib}" for lib in libraries)], check=True)
    spec = importlib.util.spec_from_file_location(name, built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
