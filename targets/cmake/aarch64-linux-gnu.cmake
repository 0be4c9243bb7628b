# CMake toolchain file: cross-build for aarch64 Linux (cortex-a78 bundles) with Debian's cross compilers
# (apt-get install g++-aarch64-linux-gnu). Run the result on the device, or here under
#   qemu-aarch64 -L /usr/aarch64-linux-gnu ./program
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# a bundle's CMake package lives outside the sysroot (find_package with CMAKE_PREFIX_PATH=<bundle>)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
