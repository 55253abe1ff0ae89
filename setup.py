"""Build the compiled engine.

Metadata lives in pyproject.toml; this file only lists the extensions and reads the build switches:
  KINCIR_NO_EXTENSIONS=1  build a pure-Python package (the engine runs on its twin)
  KINCIR_DEBUG=1          compile with assertions and without optimisation
  KINCIR_TRACE=1          compile with line tracing (coverage of .pyx/.pxi lines)
"""

import os
import sys

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _extensions() -> list[Extension]:
    if _flag("KINCIR_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    macros = []
    directives = {"language_level": "3", "embedsignature": True}
    if _flag("KINCIR_TRACE"):
        directives["linetrace"] = True
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    if _flag("KINCIR_DEBUG"):
        macros.append(("KINCIR_DEBUG", "1"))
        compile_args = ["-O0", "-g", "-UNDEBUG"] if os.name != "nt" else []
    else:
        compile_args = ["-O2"] if os.name != "nt" else []
    modules = ["_message", "_broker"]
    if sys.platform.startswith("linux"):  # futexes and robust process-shared mutexes
        modules += ["_shm_sync", "_shm_log"]
    extensions = [
        Extension(
            f"kincir_core.{name}",
            [f"kincir_core/{name}.pyx"],
            define_macros=macros,
            extra_compile_args=compile_args,
        )
        for name in modules
    ]
    return cythonize(extensions, compiler_directives=directives)


setup(ext_modules=_extensions())
