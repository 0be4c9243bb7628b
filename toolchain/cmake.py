"""``python3 -m hanasc.cmake`` prints the folder of hanasc's CMake files (HanascModel.cmake with
``hanasc_add_model``, the aarch64 toolchain file), for ``list(APPEND CMAKE_MODULE_PATH ...)``."""

from __future__ import annotations

from hanasc.targets.c_package import cmake_dir

if __name__ == "__main__":
    print(cmake_dir())
